"""Campaign's client of bounce's admin API: the shared suppression list ("Subscrições bounce"),
each account's reputation (rates over time, the brake's pause) and the admin override of the
brake. The console calls it on behalf of a signed-in administrator; bounce has no users."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel


class BounceUnavailable(Exception):
    """Bounce did not answer, or answered with a server error."""


class Suppression(BaseModel):
    """An address of the shared suppression list."""

    suppression_id: int
    email: str
    reason: str
    diagnostic: str
    account_id: int | None
    campaign_id: int | None
    suppressed_at: datetime


class SuppressionPage(BaseModel):
    """A page of the list, newest first; `next` is the `before` of the following page."""

    items: list[Suppression]
    next: int | None


class Pause(BaseModel):
    """The brake's pause of an account."""

    paused_at: datetime
    until: datetime
    reason: str


class Override(BaseModel):
    """An administrator's decision to ignore an account's brake (`until` None: until switched off)."""

    account_id: int
    until: datetime | None
    reason: str
    set_by: str
    set_at: datetime


class Reading(BaseModel):
    """One poll of an account's rates (fractions; None: unknown) and whether it was paused after."""

    polled_at: datetime
    source: str
    bounce_rate: float | None
    complaint_rate: float | None
    sent: int | None
    paused: bool


class Reputation(BaseModel):
    """An account's brake state and rates history, oldest first."""

    account_id: int
    pause: Pause | None
    override: Override | None
    history: list[Reading]


class OverrideRefused(Exception):
    """Bounce refused the override (e.g. a date in the past); the message is bounce's."""


class BounceClient:
    """Bounce's admin API over HTTP."""

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=10.0, transport=transport)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BounceUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise BounceUnavailable(f"bounce answered {response.status_code}")
        return response

    async def suppressions(
        self,
        *,
        email: str | None = None,
        reason: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> SuppressionPage:
        """A page of the suppression list, newest first; `email` is an exact address."""
        params: dict[str, Any] = {"limit": limit}
        if email:
            params["email"] = email
        if reason:
            params["reason"] = reason
        if before is not None:
            params["before"] = before
        response = await self._request("GET", "/api/v1/suppressions", params=params)
        if response.status_code == httpx.codes.UNPROCESSABLE_ENTITY:
            return SuppressionPage(items=[], next=None)
        response.raise_for_status()
        return SuppressionPage.model_validate(response.json())

    async def remove_suppression(self, email: str) -> bool:
        """Take an address off the list; False if it was not on it."""
        response = await self._request("DELETE", f"/api/v1/suppressions/{quote(email, safe='')}")
        if response.status_code == httpx.codes.NOT_FOUND:
            return False
        response.raise_for_status()
        return True

    async def reputation(self, account_id: int, hours: float = 24) -> Reputation | None:
        """The account's brake state and rates of the last `hours`; None if bounce does not know it
        yet (its configuration event has not arrived)."""
        response = await self._request(
            "GET", f"/api/v1/accounts/{account_id}/reputation", params={"hours": hours}
        )
        if response.status_code == httpx.codes.NOT_FOUND:
            return None
        response.raise_for_status()
        return Reputation.model_validate(response.json())

    async def set_override(
        self, account_id: int, *, by: str, until: datetime | None, reason: str
    ) -> Override | None:
        """Ignore the account's brake until `until` (None: until switched off); None if bounce does
        not know the account; OverrideRefused if bounce refuses the values."""
        body = {"by": by, "until": until.isoformat() if until else None, "reason": reason}
        response = await self._request("POST", f"/api/v1/accounts/{account_id}/brake-override", json=body)
        if response.status_code == httpx.codes.NOT_FOUND:
            return None
        if response.status_code == httpx.codes.UNPROCESSABLE_ENTITY:
            raise OverrideRefused(str(response.json().get("detail")))
        response.raise_for_status()
        return Override.model_validate(response.json())

    async def clear_override(self, account_id: int, *, by: str) -> bool:
        """Let the brake judge the account again; False if no override was in force."""
        response = await self._request(
            "DELETE", f"/api/v1/accounts/{account_id}/brake-override", params={"by": by}
        )
        if response.status_code == httpx.codes.NOT_FOUND:
            return False
        response.raise_for_status()
        return True

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()
