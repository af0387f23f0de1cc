"""The pages a recipient sees (Brazilian Portuguese), rendered on the server: no script needed."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from services.tracking.unsubscribe import MAX_REASON_LENGTH, Scope

BRAZIL = ZoneInfo("America/Sao_Paulo")

# The page sends nothing anywhere but its own form: no script, no third-party resource, no
# framing (clickjacking an unsubscribe button), no referrer carrying the signed token away.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}

_templates = Environment(
    loader=PackageLoader("services.tracking", "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
)


def on_screen(moment: datetime) -> str:
    """A date and time as Brazilians read it: dd/mm/yyyy HH:MM:SS, Brasília time."""
    return moment.astimezone(BRAZIL).strftime("%d/%m/%Y %H:%M:%S")


def unsubscribe_form(*, missing_choice: bool = False, reason: str = "") -> HTMLResponse:
    """The page offering to leave this campaign or every future one (400 if a choice was missing)."""
    html = _templates.get_template("unsubscribe.html").render(
        missing_choice=missing_choice, reason=reason, max_reason=MAX_REASON_LENGTH
    )
    return HTMLResponse(html, status_code=400 if missing_choice else 200, headers=PAGE_HEADERS)


def unsubscribed(scope: Scope, requested_at: datetime) -> HTMLResponse:
    """The confirmation of an unsubscribe, with when it was asked."""
    html = _templates.get_template("unsubscribed.html").render(
        scope=scope, requested_at=on_screen(requested_at)
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)
