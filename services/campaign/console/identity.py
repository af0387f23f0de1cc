"""Who is calling, and what they may do: the dependencies every console screen and every
/api/v1 route use.

Console screens take `UserDep` (any signed-in user) or `AdminDep` (administrators only): an
anonymous visitor is sent to the login page, a normal user on an administration screen gets the
403 page. JSON APIs take `CallerDep` / `ApiAdminDep` instead: a signed-in console session (same
role rules, and a CSRF header on changes) or the internal service token
(`Authorization: Bearer <CAMPAIGN_API_TOKEN>`), which acts as an administrator; otherwise 401/403.

The user is read from the database on every request (the session holds only the id), so a role
change or a removal takes effect at once.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request, status

from services.campaign.console.repository import User, UserRepository
from services.campaign.settings import CampaignSettings
from shared.errors import NotFound
from shared.service import Runtime, RuntimeDep

SESSION_USER = "user_id"
SESSION_CSRF = "csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_UNSET = object()


class LoginRequired(Exception):
    """No signed-in user: the console answers with the login page (a redirect)."""


class Forbidden(Exception):
    """The signed-in user may not do this: the console answers with its 403 page."""

    def __init__(self, message: str = "Você não tem permissão para acessar esta página.") -> None:
        super().__init__(message)
        self.message = message


def settings_of(runtime: Runtime) -> CampaignSettings:
    """The campaign settings of the running service."""
    return cast(CampaignSettings, runtime.settings)


async def session_user(request: Request, runtime: Runtime) -> User | None:
    """The signed-in user of this request's session, or None (a removed user's session is cleared)."""
    cached = getattr(request.state, "console_user", _UNSET)
    if cached is not _UNSET:
        return cast(User | None, cached)
    user = None
    user_id = request.session.get(SESSION_USER)
    if isinstance(user_id, int):
        async with runtime.pool.acquire() as conn:
            user = await UserRepository(conn).find(user_id)
        if user is None:
            request.session.clear()
    request.state.console_user = user
    return user


async def require_user(request: Request, runtime: RuntimeDep) -> User:
    """A console screen's signed-in user; LoginRequired (→ login page) when there is none."""
    user = await session_user(request, runtime)
    if user is None:
        raise LoginRequired
    return user


async def require_admin(user: Annotated[User, Depends(require_user)]) -> User:
    """A console screen's administrator; Forbidden (→ 403 page) for a normal user."""
    if not user.is_admin:
        raise Forbidden("Esta página é restrita a administradores.")
    return user


UserDep = Annotated[User, Depends(require_user)]
"""The signed-in user of a console screen."""

AdminDep = Annotated[User, Depends(require_admin)]
"""The signed-in administrator of a console screen."""


def csrf_ok(request: Request, sent: object) -> bool:
    """Whether `sent` is this session's CSRF token."""
    expected = request.session.get(SESSION_CSRF)
    return isinstance(expected, str) and isinstance(sent, str) and hmac.compare_digest(expected, sent)


@dataclass(frozen=True)
class Caller:
    """Who calls a JSON API: a console user, or another service (`user` None) with full rights."""

    user: User | None

    @property
    def is_admin(self) -> bool:
        """Services and administrators may do everything."""
        return self.user is None or self.user.is_admin

    @property
    def sender_address_ids(self) -> list[int] | None:
        """The sender addresses the caller is limited to; None: all of them."""
        return None if self.is_admin or self.user is None else self.user.sender_address_ids

    def may_use_sender(self, sender_address_id: int) -> bool:
        """Whether the caller may act on campaigns of this sender address."""
        return self.user is None or self.user.may_use_sender(sender_address_id)

    def check_sender(self, sender_address_id: int) -> None:
        """404 (not 403: a normal user does not learn what exists) when the caller may not act on it."""
        if not self.may_use_sender(sender_address_id):
            raise NotFound("not found")

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return "service" if self.user is None else self.user.email


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def api_caller(request: Request, runtime: RuntimeDep) -> Caller:
    """The caller of a JSON API: the service token, or a console session (401 otherwise; 403 when
    a session's change request lacks its CSRF header)."""
    token = _bearer(request)
    if token is not None:
        expected = settings_of(runtime).CAMPAIGN_API_TOKEN
        if hmac.compare_digest(token.encode(), expected.encode()):
            return Caller(user=None)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid token", headers={"WWW-Authenticate": "Bearer"}
        )
    user = await session_user(request, runtime)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "sign in or send a bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # A cookie rides along on cross-site requests; a header a foreign page cannot set does not.
    if request.method not in SAFE_METHODS and not csrf_ok(request, request.headers.get(CSRF_HEADER)):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token")
    return Caller(user=user)


async def api_admin(caller: Annotated[Caller, Depends(api_caller)]) -> Caller:
    """An administrator or a service (403 for a normal user)."""
    if not caller.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "administrators only")
    return caller


CallerDep = Annotated[Caller, Depends(api_caller)]
"""The caller of a JSON API route."""

ApiAdminDep = Annotated[Caller, Depends(api_admin)]
"""The caller of an administrative JSON API route."""
