"""Campaign's client of audience's internal HTTP API, which owns groups."""

from __future__ import annotations

from typing import Any

import httpx


class AudienceUnavailable(Exception):
    """Audience did not answer; the API reports 503."""


class AudienceClient:
    """Reads and creates groups through audience's internal API."""

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=10.0, transport=transport)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AudienceUnavailable(str(exc)) from exc

    async def create_group(self, body: Any) -> tuple[int, Any]:
        """Forward a group creation; audience's status and JSON answer come back as they are."""
        response = await self._request("POST", "/internal/v1/groups", json=body)
        return response.status_code, response.json()

    async def get_group(self, group_id: int) -> tuple[int, Any]:
        """A group as audience shows it, with its status code (404 when unknown)."""
        response = await self._request("GET", f"/internal/v1/groups/{group_id}")
        return response.status_code, response.json()

    async def missing_groups(self, group_ids: list[int]) -> list[int]:
        """Which of these groups audience does not know."""
        missing = []
        for group_id in group_ids:
            status, _ = await self.get_group(group_id)
            if status == httpx.codes.NOT_FOUND:
                missing.append(group_id)
            elif status != httpx.codes.OK:
                raise AudienceUnavailable(f"audience answered {status} for group {group_id}")
        return missing

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()
