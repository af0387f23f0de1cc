"""The baseline of `bench_tracking`: a bare Starlette app answering the tracking service's two hot
paths with the same bytes (the 1x1 GIF, a 302 to `DESTINATION`, the same headers), but without
verifying tokens or recording anything. Run by uvicorn as `bench.bare_tracking:create_app --factory`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

# The service's own bytes and headers (private there, imported so the two can never drift apart).
from services.tracking.api import _NO_CACHE, _REDIRECT_HEADERS, PIXEL

# Where every benchmark click token points, so both apps send the same Location.
DESTINATION = "https://example.org/cursos/inscricao?utm_source=mailer&utm_campaign=bench"


async def _pixel(_: Request) -> Response:
    return Response(PIXEL, media_type="image/gif", headers=_NO_CACHE)


async def _click(_: Request) -> Response:
    return RedirectResponse(DESTINATION, status_code=302, headers=_REDIRECT_HEADERS)


def create_app() -> Starlette:
    """The bare app (a factory, like the services, so uvicorn starts both the same way)."""
    return Starlette(routes=[Route("/o/{token}.gif", _pixel), Route("/c/{token}", _click)])
