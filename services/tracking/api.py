"""Tracking's public endpoints. A forged or altered token gets a plain 404 and records nothing.

The pixel and the redirect are the hot paths: plain Starlette routes answered by `HotPaths` ahead
of FastAPI's own layers, with no per-request logging, tracing or metric, and no database write:
their event, serialised once (`engagement`), goes to the in-process `EventBuffer`, published to
RabbitMQ in confirmed batches. An unsubscribe is the exception: it is kept in the database before
the answer (see `unsubscribe`).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from services.tracking import engagement, pages
from services.tracking import repository as tracking_repo
from services.tracking.event_buffer import EventBuffer
from services.tracking.forms import FormTooLarge, read_form
from services.tracking.machines import ClickBursts, is_machine_request
from services.tracking.unsubscribe import Unsubscribe, chosen_scope, clean_reason, is_one_click
from shared.contracts import utc_now
from shared.links import ANONYMOUS, OPEN, UNSUBSCRIBE, LinkSigner
from shared.outbox import add_event
from shared.service import Runtime

# The smallest transparent GIF (1x1).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
# Every open and click must reach us: nothing may cache the pixel or the redirect.
_NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}
# The destination must not learn the signed token from the Referer of the redirected request.
_REDIRECT_HEADERS = {**_NO_CACHE, "Referrer-Policy": "no-referrer"}


@dataclass(frozen=True)
class Tracker:
    """What the endpoints work with, built once by `create_app`; serves the pixel and the redirect."""

    signer: LinkSigner
    events: EventBuffer
    bursts: ClickBursts

    async def open_pixel(self, request: Request) -> Response:
        """The open pixel: records the open, answers a 1x1 GIF that is never cached."""
        delivery = self.signer.verify_delivery(OPEN, request.path_params["token"])
        if delivery is None:
            return _not_found()
        machine = is_machine_request(request.method, request.headers.get("user-agent"))
        await self.events.put(engagement.opened(*delivery, machine))
        return Response(PIXEL, media_type="image/gif", headers=_NO_CACHE)

    async def click(self, request: Request) -> Response:
        """A tracked link: records the click, redirects (302) to the destination the token signed."""
        found = self.signer.verify_click(request.path_params["token"])
        if found is None:
            return _not_found()
        campaign_id, recipient_id, url = found
        agent = request.headers.get("user-agent")
        client = f"{request.client.host if request.client else ''}|{agent}"
        # Always fed, so a burst is seen even when its first click was flagged for other reasons.
        burst = self.bursts.is_burst(campaign_id, recipient_id, client, url, time.monotonic())
        machine = burst or is_machine_request(request.method, agent)
        await self.events.put(engagement.clicked(campaign_id, recipient_id, url, machine))
        return RedirectResponse(url, status_code=302, headers=_REDIRECT_HEADERS)


class HotPaths:
    """ASGI app answering the pixel and the redirect with plain Starlette routes bound to the
    tracker; anything else goes on to `app`. An error in them is answered 500 by uvicorn."""

    def __init__(self, app: ASGIApp, tracker: Tracker) -> None:
        self._app = app
        self._router = Router(
            routes=[
                Route("/o/{token}.gif", tracker.open_pixel, methods=["GET"]),
                Route("/c/{token}", tracker.click, methods=["GET"]),
            ],
            redirect_slashes=False,
            default=app,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only requests: a router answers the lifespan itself, which must reach the app.
        await (self._router if scope["type"] == "http" else self._app)(scope, receive, send)


class TrackingApp(FastAPI):
    """The service's FastAPI app with `hot_paths` in front of all its per-request work: its
    telemetry check (reading the environment on every request), middleware stack and routing
    added 20-40 % to the pixel's own time (profiled in-process)."""

    hot_paths: HotPaths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.hot_paths(scope, receive, send)


def _not_found() -> Response:
    return PlainTextResponse("Not found", status_code=404)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def unsubscribe(request: Request) -> Response:
    """GET: the unsubscribe page. POST: the page's form, or an RFC 8058 one-click unsubscribe
    (`List-Unsubscribe=One-Click`: every future campaign, 200, no page)."""
    runtime = _runtime(request)
    tracker: Tracker = runtime.state["tracker"]
    delivery = tracker.signer.verify_delivery(UNSUBSCRIBE, request.path_params["token"])
    # Unsubscribe links always name the recipient; an anonymous one is none we signed.
    if delivery is None or delivery[1] == ANONYMOUS:
        return _not_found()
    if request.method != "POST":
        return pages.unsubscribe_form()
    try:
        form = await read_form(request)
    except FormTooLarge:
        return PlainTextResponse("Request body too large", status_code=413)
    campaign_id, recipient_id = delivery
    if is_one_click(form):
        await _keep(runtime, Unsubscribe(campaign_id, recipient_id, "all", "", "one_click", utc_now()))
        return PlainTextResponse("Unsubscribed")
    scope, reason = chosen_scope(form), clean_reason(form.get("reason", ""))
    if scope is None:
        return pages.unsubscribe_form(missing_choice=True, reason=reason)
    requested_at = await _keep(
        runtime, Unsubscribe(campaign_id, recipient_id, scope, reason, "page", utc_now())
    )
    return pages.unsubscribed(scope, requested_at)


async def _keep(runtime: Runtime, request: Unsubscribe) -> datetime:
    """Keep the unsubscribe and queue its event in one transaction (published after commit, also
    once the broker is back if it is away); return when it was first asked."""
    async with runtime.transaction() as conn:
        requested_at, first = await tracking_repo.UnsubscribeRepository(conn).record(request)
        if first:
            await add_event(conn, request.requested())
    return requested_at


router = APIRouter()
router.add_route("/u/{token}", unsubscribe, methods=["GET", "POST"], include_in_schema=False)
