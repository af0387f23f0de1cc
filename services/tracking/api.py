"""Tracking's public endpoints. A forged or altered token gets a plain 404 and records nothing.

The hot path writes no database row: a genuine open is published straight to RabbitMQ."""

from __future__ import annotations

import base64
import logging

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from shared.broker import publish_event
from shared.contracts import MessageOpened, utc_now
from shared.links import LinkSigner
from shared.service import RuntimeDep

log = logging.getLogger(__name__)

router = APIRouter()

# The smallest transparent GIF (1x1).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}


@router.get("/o/{token}.gif", include_in_schema=False)
async def open_pixel(token: str, runtime: RuntimeDep) -> Response:
    """The open pixel: records the open, answers a 1x1 GIF that is never cached."""
    signer: LinkSigner = runtime.state["signer"]
    values = signer.verify("open", token)
    # isascii too: str.isdigit accepts digits such as "²" that int() refuses.
    if values is None or len(values) != 2 or not all(v.isascii() and v.isdigit() for v in values):
        return PlainTextResponse("Not found", status_code=404)
    event = MessageOpened(campaign_id=int(values[0]), recipient_id=int(values[1]), opened_at=utc_now())
    try:
        await publish_event(runtime.broker, event)
    except Exception:
        # An open is not worth a broken image in the reader's mail client.
        log.warning("open could not be published", exc_info=True)
    return Response(PIXEL, media_type="image/gif", headers=_NO_CACHE)
