"""Rendering of console pages: the Jinja2 environment, its Brazilian filters, and `render`, which
gives every template the signed-in user, the CSRF token and the navigation.

Dates are shown as dd/mm/yyyy HH:MM:SS in America/Sao_Paulo whatever the server's zone.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup
from starlette.routing import Match

from services.campaign.console.identity import SESSION_CSRF

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
TEMPLATES_DIR = Path(__file__).parent / "templates"

templates = Jinja2Templates(directory=TEMPLATES_DIR)


def datahora(value: datetime | None, empty: str = "") -> str:
    """dd/mm/yyyy HH:MM:SS in São Paulo time; `empty` for no date."""
    if value is None:
        return empty
    if value.tzinfo is not None:
        value = value.astimezone(SAO_PAULO)
    return value.strftime("%d/%m/%Y %H:%M:%S")


def data(value: datetime | None, empty: str = "") -> str:
    """dd/mm/yyyy in São Paulo time."""
    return datahora(value, empty)[:10] if value is not None else empty


def numero(value: int | float | None, empty: str = "") -> str:
    """A number with Brazilian thousands separators (1.234.567; 12,5)."""
    if value is None:
        return empty
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}".replace(",", "_").replace(".", ",").replace("_", ".")
    return f"{int(value):,}".replace(",", ".")


def with_query(request: Request, **changes: Any) -> str:
    """The current URL's query with some parameters changed (None removes one)."""
    params = {k: v for k, v in request.query_params.items() if k not in changes}
    params |= {k: v for k, v in changes.items() if v is not None and v != ""}
    return f"?{urlencode(params)}" if params else "?"


@pass_context
def csrf_field(context: Context) -> Markup:
    """The hidden CSRF input every changing form carries."""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(context["csrf_token"])


templates.env.filters["datahora"] = datahora
templates.env.filters["data"] = data
templates.env.filters["numero"] = numero
templates.env.globals["with_query"] = with_query
templates.env.globals["csrf_field"] = csrf_field


@dataclass(frozen=True)
class NavItem:
    """An entry of the menu: shown when its screen exists, to administrators only if `admin`."""

    label: str
    href: str
    admin: bool = False


# The manual's menu, in its order. An entry appears once a screen is routed at its href.
NAV = (
    NavItem("Campanhas", "/console/campanhas"),
    NavItem("Exibir uso das contas", "/console/uso-das-contas"),
    NavItem("Grupos", "/console/grupos"),
    NavItem("Envios por API", "/console/envios-api"),
    NavItem("Subscrições canceladas", "/console/subscricoes-canceladas", admin=True),
    NavItem("Subscrições bounce", "/console/subscricoes-bounce", admin=True),
    NavItem("Endereços de envio SMTP", "/console/enderecos-de-envio", admin=True),
    NavItem("Usuários", "/console/usuarios", admin=True),
    NavItem("Gerenciador de arquivos", "/console/arquivos"),
)


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use)."""
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


def _routed(request: Request) -> set[str]:
    """The menu hrefs that have a GET route (screens are added over time), computed once."""
    hrefs: set[str] | None = getattr(request.app.state, "console_nav_hrefs", None)
    if hrefs is None:
        hrefs = set()
        for item in NAV:
            scope = {"type": "http", "path": item.href, "method": "GET", "root_path": "", "path_params": {}}
            if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
                hrefs.add(item.href)
        request.app.state.console_nav_hrefs = hrefs
    return hrefs


def nav_items(request: Request, is_admin: bool) -> list[NavItem]:
    """The menu entries this user sees."""
    routed = _routed(request)
    return [item for item in NAV if item.href in routed and (is_admin or not item.admin)]


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    """Render a console template with the user, CSRF token, menu and current path."""
    user = getattr(request.state, "console_user", None)
    values = {
        "user": user,
        "csrf_token": csrf_token(request),
        "nav": nav_items(request, bool(user and user.is_admin)) if user else [],
        "path": request.url.path,
        **(context or {}),
    }
    return templates.TemplateResponse(request, template, values, status_code=status_code)
