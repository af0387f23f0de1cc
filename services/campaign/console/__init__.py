"""The console: server-rendered screens (Jinja2 + htmx, no build step) in Brazilian Portuguese.

How to add a screen
-------------------
1. Write a module `services/campaign/console/<screen>.py` with `router = APIRouter()` and routes
   whose paths start with the screen's own Portuguese slug (the console router adds `/console`),
   e.g. `@router.get("/usuarios")`. Take the user with `UserDep` (any signed-in user) or
   `AdminDep` (administrators only) from `console.identity`; JSON routes for the screen take
   `CallerDep` / `ApiAdminDep` instead. Answer with
   `templating.render(request, "<screen>/list.html", {...})`.
2. Write its templates under `console/templates/<screen>/`, each starting with
   `{% extends "base.html" %}` and filling `{% block title %}` and `{% block content %}`.
   Every form that changes something carries `{{ csrf_field() }}` (htmx requests send the
   token in a header by themselves, set on <body>). Dates: `{{ value|datahora }}`.
3. Add the module to `SCREENS` below. The menu (`templating.NAV`) shows an entry once a GET route
   exists at its href; mark administrator-only entries with `admin=True` there.
4. Record administrative actions with `console.audit.audit(conn, user, "thing.changed", target, **details)`
   inside the action's transaction.

Errors: raise `identity.Forbidden("…")` for the 403 page; `shared.errors.NotFound` shows the 404
page on console paths and stays JSON on the API.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from services.campaign.console import auth
from services.campaign.console.identity import (
    CSRF_FIELD,
    CSRF_HEADER,
    SAFE_METHODS,
    Forbidden,
    LoginRequired,
    csrf_ok,
)
from services.campaign.console.templating import render
from services.campaign.settings import CampaignSettings
from shared.errors import Conflict, NotFound

log = logging.getLogger(__name__)

PREFIX = "/console"
STATIC_DIR = Path(__file__).parent / "static"

# Every screen module of the console (each has a `router`), imported by name so a screen being
# added by someone else cannot break the import of this package.
SCREENS = (
    "services.campaign.console.campaigns",
    "services.campaign.console.users",
    "services.campaign.console.bounces",
    "services.campaign.console.unsubscribes",
    "services.campaign.console.accounts",
    "services.campaign.console.groups",
    "services.campaign.console.files",
    "services.campaign.console.usage",
    "services.campaign.console.api_sends",
)

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class CsrfRejected(Exception):
    """A change request without this session's CSRF token."""


async def verify_csrf(request: Request) -> None:
    """Every console request that changes something carries the session's token (form field
    `csrf_token` or header `X-CSRF-Token`)."""
    if request.method in SAFE_METHODS:
        return
    sent: object = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(_FORM_TYPES):
        sent = (await request.form()).get(CSRF_FIELD)
    if not csrf_ok(request, sent):
        raise CsrfRejected


def _is_console(request: Request) -> bool:
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


def _error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    return render(request, "error.html", {"title": title, "message": message}, status_code=status_code)


def _exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = f"{PREFIX}/entrar?next={target}" if request.method == "GET" else f"{PREFIX}/entrar"
        if request.headers.get("HX-Request"):
            return Response(status_code=401, headers={"HX-Redirect": login})
        return RedirectResponse(login, status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return _error_page(request, 403, "Acesso negado", exc.message)

    @app.exception_handler(CsrfRejected)
    async def csrf_rejected(request: Request, _: CsrfRejected) -> Response:
        return _error_page(
            request,
            403,
            "Formulário expirado",
            "Sua sessão expirou ou o formulário é antigo. Recarregue a página e tente de novo.",
        )

    # The service answers these in JSON; console pages get a page instead.
    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        if _is_console(request):
            return _error_page(request, 404, "Não encontrado", "A página ou o registro não existe.")
        return JSONResponse({"detail": str(exc) or "not found"}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> Response:
        if _is_console(request):
            return _error_page(request, 409, "Operação não permitida", str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=409)


def build_router() -> APIRouter:
    """The console's routes: login and every screen in SCREENS, under /console, CSRF-checked."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(verify_csrf)])
    router.include_router(auth.router)
    for name in SCREENS:
        router.include_router(importlib.import_module(name).router)

    @router.get("")
    @router.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse(auth.HOME, status_code=303)

    return router


def install(app: FastAPI, settings: CampaignSettings) -> None:
    """Add the console to the campaign app: session cookies, static files, screens, error pages."""
    app.state.console_oauth = auth.make_oauth(settings)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.CONSOLE_SESSION_SECRET,
        session_cookie="mailer_session",
        max_age=settings.CONSOLE_SESSION_MAX_AGE,
        same_site="lax",
        https_only=settings.CONSOLE_HTTPS_ONLY,
    )
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(build_router())

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(auth.HOME, status_code=303)

    _exception_handlers(app)
