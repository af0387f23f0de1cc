"""Signing in and out of the console.

With `OIDC_ISSUER_URL` set, the login page sends the user to the organisation's single sign-on
(OpenID Connect authorization code flow through authlib); the name and e-mail come from the ID
token. Without an issuer (development only), the page asks for a name and an e-mail instead.
Either way the user row is created or refreshed (`UserRepository.login`), addresses listed in
`CONSOLE_ADMIN_EMAILS` become administrators, and the session is started afresh (new CSRF token)
so a session id planted before login is worth nothing.
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated, Any

from authlib.integrations.starlette_client import OAuth, OAuthError
from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.campaign.console.identity import SESSION_CSRF, SESSION_USER, session_user, settings_of
from services.campaign.console.repository import User, UserRepository
from services.campaign.console.templating import render
from services.campaign.settings import CampaignSettings
from shared.service import Runtime, RuntimeDep

log = logging.getLogger(__name__)

router = APIRouter()

HOME = "/console/campanhas"
_OIDC_CLIENT = "sso"


def make_oauth(settings: CampaignSettings) -> OAuth | None:
    """The OIDC client of the configured issuer (discovery is fetched at the first login), or None."""
    if not settings.OIDC_ISSUER_URL:
        return None
    oauth = OAuth()
    oauth.register(
        name=_OIDC_CLIENT,
        server_metadata_url=settings.OIDC_ISSUER_URL.rstrip("/") + "/.well-known/openid-configuration",
        client_id=settings.OIDC_CLIENT_ID,
        client_secret=settings.OIDC_CLIENT_SECRET,
        client_kwargs={"scope": settings.OIDC_SCOPES},
    )
    return oauth


def _oauth(request: Request) -> OAuth | None:
    oauth: OAuth | None = request.app.state.console_oauth
    return oauth


def safe_next(target: str | None) -> str:
    """A local path to go to after login (anything else, e.g. another site, goes home)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return HOME
    return target


async def _start_session(
    request: Request, runtime: Runtime, name: str, email: str, subject: str | None
) -> User:
    admin = email.lower() in settings_of(runtime).admin_emails
    async with runtime.transaction() as conn:
        user = await UserRepository(conn).login(name, email, subject, admin)
    request.session.clear()
    request.session[SESSION_USER] = user.user_id
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)
    request.state.console_user = user
    log.info("console login", extra={"user_id": user.user_id})
    return user


def _login_page(
    request: Request,
    runtime: Runtime,
    *,
    next_path: str,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    settings = settings_of(runtime)
    return render(
        request,
        "login.html",
        {
            "sso": bool(settings.OIDC_ISSUER_URL),
            "development": settings.development_login,
            "next": next_path,
            "values": values or {},
            "errors": errors or {},
            "message": message,
        },
        status_code=status_code,
    )


@router.get("/entrar", response_class=HTMLResponse)
async def login_page(request: Request, runtime: RuntimeDep, next: str | None = None) -> Response:
    """The login page: single sign-on, or the development form without an issuer."""
    if await session_user(request, runtime) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, runtime, next_path=safe_next(next))


@router.post("/entrar", response_class=HTMLResponse)
async def development_login(
    request: Request,
    runtime: RuntimeDep,
    name: Annotated[str, Form(max_length=200)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    next: Annotated[str, Form(max_length=2000)] = HOME,
) -> Response:
    """Sign in with a name and an e-mail (development login; 404 when single sign-on is configured)."""
    if not settings_of(runtime).development_login:
        return _login_page(
            request, runtime, next_path=safe_next(next), message="Use o login único.", status_code=404
        )
    errors: dict[str, str] = {}
    name = name.strip()
    if not name:
        errors["name"] = "Informe o nome."
    try:
        email = validate_email(email.strip(), check_deliverability=False, test_environment=True).normalized
    except EmailNotValidError:
        errors["email"] = "Informe um e-mail válido."
    if errors:
        return _login_page(
            request,
            runtime,
            next_path=safe_next(next),
            values={"name": name, "email": email},
            errors=errors,
            status_code=422,
        )
    await _start_session(request, runtime, name, email, None)
    return RedirectResponse(safe_next(next), status_code=303)


@router.get("/entrar/sso")
async def single_sign_on(request: Request, runtime: RuntimeDep, next: str | None = None) -> Response:
    """Send the user to the identity provider."""
    oauth = _oauth(request)
    if oauth is None:
        return RedirectResponse("/console/entrar", status_code=303)
    request.session["next"] = safe_next(next)
    base = settings_of(runtime).CONSOLE_BASE_URL
    redirect_uri = (
        base.rstrip("/") + "/console/entrar/retorno"
        if base
        else str(request.url_for("console_oidc_callback"))
    )
    client: Any = oauth.create_client(_OIDC_CLIENT)
    try:
        response: Response = await client.authorize_redirect(request, redirect_uri)
    except Exception:
        log.warning("identity provider unreachable", exc_info=True)
        return _login_page(
            request,
            runtime,
            next_path=safe_next(next),
            message="O login único não respondeu. Tente de novo em instantes.",
            status_code=503,
        )
    return response


@router.get("/entrar/retorno", name="console_oidc_callback")
async def oidc_callback(request: Request, runtime: RuntimeDep) -> Response:
    """The identity provider's answer: check it, read name and e-mail from the ID token, sign in."""
    oauth = _oauth(request)
    if oauth is None:
        return RedirectResponse("/console/entrar", status_code=303)
    next_path = safe_next(request.session.get("next"))
    client: Any = oauth.create_client(_OIDC_CLIENT)
    try:
        token = await client.authorize_access_token(request)
        claims = dict(token.get("userinfo") or {})
        if not claims.get("email"):
            claims |= dict(await client.userinfo(token=token))
    except (OAuthError, ValueError, KeyError) as exc:
        log.warning("single sign-on refused", extra={"error": str(exc)})
        return _login_page(
            request,
            runtime,
            next_path=next_path,
            message="Não foi possível entrar pelo login único.",
            status_code=400,
        )
    except Exception:
        log.warning("identity provider unreachable", exc_info=True)
        return _login_page(
            request,
            runtime,
            next_path=next_path,
            message="O login único não respondeu. Tente de novo em instantes.",
            status_code=503,
        )
    email = str(claims.get("email") or "").strip()
    if not email or claims.get("email_verified") is False:
        return _login_page(
            request,
            runtime,
            next_path=next_path,
            message="O login único não informou um e-mail verificado.",
            status_code=400,
        )
    name = str(claims.get("name") or claims.get("preferred_username") or email.split("@")[0])
    await _start_session(request, runtime, name, email, str(claims.get("sub") or "") or None)
    return RedirectResponse(next_path, status_code=303)


@router.post("/sair")
async def logout(request: Request) -> Response:
    """End the session."""
    request.session.clear()
    return RedirectResponse("/console/entrar", status_code=303)
