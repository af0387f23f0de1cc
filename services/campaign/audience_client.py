"""Campaign's client of audience's internal HTTP API, which owns groups."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
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

    async def list_groups(self, page_size: int = 1000) -> list[dict[str, Any]]:
        """Every group with its member count, in id order (audience pages by id)."""
        groups: list[dict[str, Any]] = []
        after = 0
        while True:
            response = await self._request(
                "GET", "/internal/v1/groups", params={"after": after, "limit": page_size}
            )
            self._raise_on_server_error(response)
            page: list[dict[str, Any]] = response.json()
            groups.extend(page)
            if len(page) < page_size:
                return groups
            after = page[-1]["group_id"]

    async def rename_group(self, group_id: int, name: str) -> tuple[int, Any]:
        """Rename a group; audience's status (404 unknown, 422 invalid) and answer."""
        response = await self._request("PATCH", f"/internal/v1/groups/{group_id}", json={"name": name})
        self._raise_on_server_error(response)
        return response.status_code, response.json()

    async def delete_group(self, group_id: int) -> bool:
        """Delete a group; False if audience does not know it."""
        response = await self._request("DELETE", f"/internal/v1/groups/{group_id}")
        self._raise_on_server_error(response)
        return response.status_code == httpx.codes.NO_CONTENT

    async def upload_csv(
        self, group_id: int, content: AsyncIterable[bytes], filename: str
    ) -> tuple[int, Any]:
        """Stream a CSV file into a csv group; audience's status (201 with the counts, 413 too
        large, 422 unreadable, 409 not a csv group) and answer."""
        try:
            response = await self._http.post(
                f"/internal/v1/groups/{group_id}/csv",
                params={"filename": filename},
                content=content,
                headers={"content-type": "text/csv"},
                # An import of a million lines takes a while; it is one request.
                timeout=httpx.Timeout(10.0, read=600.0, write=600.0),
            )
        except httpx.HTTPError as exc:
            raise AudienceUnavailable(str(exc)) from exc
        self._raise_on_server_error(response)
        return response.status_code, response.json()

    @asynccontextmanager
    async def import_errors(self, group_id: int) -> AsyncIterator[httpx.Response | None]:
        """The rejected lines of the group's last import as a streamed response (None if it has
        no import); the caller iterates `aiter_bytes()` inside the block."""
        request = self._http.build_request("GET", f"/internal/v1/groups/{group_id}/import-errors")
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise AudienceUnavailable(str(exc)) from exc
        try:
            if response.status_code == httpx.codes.NOT_FOUND:
                yield None
            else:
                self._raise_on_server_error(response)
                yield response
        finally:
            await response.aclose()

    async def preview(self, group_id: int, limit: int = 20) -> tuple[int, Any]:
        """The group's count, first rows and errors (a remote group's first page(s) are read)."""
        response = await self._request(
            "GET",
            f"/internal/v1/groups/{group_id}/preview",
            params={"limit": limit},
            # Reading a remote group's first page may take its own retries.
            timeout=httpx.Timeout(10.0, read=60.0),
        )
        self._raise_on_server_error(response)
        return response.status_code, response.json()

    @staticmethod
    def _raise_on_server_error(response: httpx.Response) -> None:
        if response.status_code >= 500:
            raise AudienceUnavailable(f"audience answered {response.status_code}")

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()
