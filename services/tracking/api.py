"""Tracking's public endpoints. A forged or altered token gets a plain 404 and records nothing.

The pixel and the redirect are the hot paths: answered by `HotPaths` as plain ASGI ahead of
FastAPI and Starlette, with no per-request logging, tracing or metric, and no database write:
their event, serialised once (`engagement`), goes to the in-process `EventBuffer`, published to
RabbitMQ in confirmed batches. An unsubscribe is the exception: it is kept in the database before
the answer (see `unsubscribe`).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import quote

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
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
    """What the endpoints work with, built once by `create_app`: checks a pixel's or a link's
    token and records the open or click (the HTTP side is `HotPaths`)."""

    signer: LinkSigner
    events: EventBuffer
    bursts: ClickBursts

    async def open_pixel(self, token: str, method: str, user_agent: str | None) -> bool:
        """Record the open of a genuine pixel token; False (nothing recorded) for any other."""
        delivery = self.signer.verify_delivery(OPEN, token)
        if delivery is None:
            return False
        machine = is_machine_request(method, user_agent)
        await self.events.put(engagement.opened(*delivery, machine))
        return True

    async def click(self, token: str, method: str, user_agent: str | None, host: str) -> str | None:
        """Record the click of a genuine link token and return where it leads; None (nothing
        recorded) for any other. `host` is the client's address, to tell bursts apart."""
        found = self.signer.verify_click(token)
        if found is None:
            return None
        campaign_id, recipient_id, url = found
        # Always fed, so a burst is seen even when its first click was flagged for other reasons.
        burst = self.bursts.is_burst(campaign_id, recipient_id, f"{host}|{user_agent}", url, time.monotonic())
        machine = burst or is_machine_request(method, user_agent)
        await self.events.put(engagement.clicked(campaign_id, recipient_id, url, machine))
        return url


# The answers' headers, as Starlette's `Response`, `RedirectResponse` and `PlainTextResponse`
# would build them for the same content (a test compares them).
_PIXEL_HEADERS = [
    *((name.lower().encode(), value.encode()) for name, value in _NO_CACHE.items()),
    (b"content-length", str(len(PIXEL)).encode()),
    (b"content-type", b"image/gif"),
]
_REDIRECT_FIXED_HEADERS = [
    *((name.lower().encode(), value.encode()) for name, value in _REDIRECT_HEADERS.items()),
    (b"content-length", b"0"),
]
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_NOT_FOUND = b"Not found"
_NOT_FOUND_HEADERS = [(b"content-length", str(len(_NOT_FOUND)).encode()), _TEXT]
_NOT_ALLOWED = b"Method Not Allowed"
_NOT_ALLOWED_HEADERS = [(b"allow", b"GET, HEAD"), (b"content-length", str(len(_NOT_ALLOWED)).encode()), _TEXT]
_READS = frozenset(("GET", "HEAD"))


# Destinations repeat (a campaign has a few links), and quoting one costs more than the lookup.
@lru_cache(maxsize=4096)
def _location(url: str) -> bytes:
    # What `RedirectResponse` does: characters a header cannot carry raw are percent-encoded.
    return quote(url, safe=":/%#?=@[]!$&'()*+,;").encode("latin-1")


class HotPaths:
    """ASGI app answering the pixel (`/o/<token>.gif`) and the redirect (`/c/<token>`) itself;
    anything else goes on to `app`. They are most of the service's traffic, and Starlette's
    router, request, response and error-handling layers took more CPU per pixel than checking
    the token and recording the open (profiled under load): here a request is the path, two
    headers and prepared answers. An error in them is answered 500 by uvicorn."""

    def __init__(self, app: ASGIApp, tracker: Tracker) -> None:
        self._app = app
        self._tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            # The token is one non-empty path segment, as Starlette's `{token}` would match it.
            if path.startswith("/o/") and path.endswith(".gif") and _is_segment(token := path[3:-4]):
                await self._pixel(scope, token, send)
                return
            if path.startswith("/c/") and _is_segment(token := path[3:]):
                await self._click(scope, token, send)
                return
        # Lifespan events as well: they must reach the app.
        await self._app(scope, receive, send)

    async def _pixel(self, scope: Scope, token: str, send: Send) -> None:
        method: str = scope["method"]
        if method not in _READS:
            await _answer(send, 405, _NOT_ALLOWED_HEADERS, _NOT_ALLOWED)
        elif await self._tracker.open_pixel(token, method, _user_agent(scope)):
            await _answer(send, 200, _PIXEL_HEADERS, PIXEL)
        else:
            await _answer(send, 404, _NOT_FOUND_HEADERS, _NOT_FOUND)

    async def _click(self, scope: Scope, token: str, send: Send) -> None:
        method: str = scope["method"]
        if method not in _READS:
            await _answer(send, 405, _NOT_ALLOWED_HEADERS, _NOT_ALLOWED)
            return
        client = scope.get("client")
        url = await self._tracker.click(token, method, _user_agent(scope), client[0] if client else "")
        if url is None:
            await _answer(send, 404, _NOT_FOUND_HEADERS, _NOT_FOUND)
        else:
            await _answer(send, 302, [*_REDIRECT_FIXED_HEADERS, (b"location", _location(url))], b"")


def _is_segment(token: str) -> bool:
    return token != "" and "/" not in token


def _user_agent(scope: Scope) -> str | None:
    # ASGI servers give header names in lower case; the first one wins, as in Starlette.
    for name, value in scope["headers"]:
        if name == b"user-agent":
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
