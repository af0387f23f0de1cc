"""Audience's internal HTTP API (used by campaign and the console): groups, their members, CSV
imports and previews. Messages meant for users (`detail`) are in Portuguese."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from services.audience import csv_import, preview
from services.audience import repository as audience_repo
from services.audience.csv_reading import CsvProblem
from services.audience.models import (
    GroupCreated,
    GroupIn,
    GroupOut,
    GroupRename,
    ImportOut,
    MemberIn,
    MembersAdded,
    MembersIn,
    Preview,
)
from services.audience.remote import RemoteGroupError, redact_url, validate_remote_url
from services.audience.resolution import Remote
from shared.errors import Conflict, NotFound
from shared.service import Runtime, RuntimeDep

router = APIRouter(prefix="/internal/v1")

# group_id is a PostgreSQL serial: an id outside it would fail in the driver (a 500), not be "not found".
GroupId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _invalid(loc: list[Any], msg: str, kind: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[{"loc": loc, "msg": msg, "type": kind}]
    )


def _within_limit(runtime: Runtime, members: list[MemberIn], loc: list[Any]) -> None:
    limit = runtime.state["max_members"]
    if len(members) > limit:
        raise _invalid(loc, f"at most {limit} members per request", "too_long")


def _remote(runtime: Runtime) -> Remote:
    remote: Remote = runtime.state["remote"]
    return remote


@router.post("/groups", status_code=status.HTTP_201_CREATED, response_model=GroupCreated)
async def create_group(body: GroupIn, runtime: RuntimeDep) -> GroupCreated:
    """Create a group. Static: with its members (each address checked, a repeated one kept once).
    CSV: empty until a file is uploaded. Remote: its URL, stored encrypted, shown redacted."""
    _within_limit(runtime, body.members, ["body", "members"])
    encrypted = redacted = None
    if body.url is not None:
        remote = _remote(runtime)
        try:
            validate_remote_url(body.url, remote.options)
        except RemoteGroupError as exc:
            raise _invalid(["body", "url"], exc.reason, "url_refused") from None
        encrypted, redacted = remote.secrets.encrypt(body.url), redact_url(body.url)
    async with runtime.transaction() as conn:
        groups = audience_repo.GroupRepository(conn)
        group_id = await groups.create(body.name, body.kind, encrypted, redacted)
        added = await groups.add_members(group_id, body.members) if body.members else 0
        group = await groups.get(group_id)
    return GroupCreated(**group.model_dump(), duplicates_ignored=len(body.members) - added)


@router.get("/groups", response_model=list[GroupOut])
async def list_groups(
    runtime: RuntimeDep,
    after: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[GroupOut]:
    """Groups in id order with their member counts, `limit` at a time after the id `after`."""
    async with runtime.pool.acquire() as conn:
        return await audience_repo.GroupRepository(conn).list(after, limit)


@router.get("/groups/{group_id}", response_model=GroupOut)
async def get_group(group_id: GroupId, runtime: RuntimeDep) -> GroupOut:
    """One group with its member count."""
    async with runtime.pool.acquire() as conn:
        return await audience_repo.GroupRepository(conn).get(group_id)


@router.patch("/groups/{group_id}", response_model=GroupOut)
async def rename_group(group_id: GroupId, body: GroupRename, runtime: RuntimeDep) -> GroupOut:
    """Give a group a new name."""
    async with runtime.transaction() as conn:
        groups = audience_repo.GroupRepository(conn)
        await groups.rename(group_id, body.name)
        return await groups.get(group_id)


@router.delete("/groups/{group_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_group(group_id: GroupId, runtime: RuntimeDep) -> Response:
    """Delete a group with its members and imports (campaigns already resolved keep their recipients)."""
    async with runtime.transaction() as conn:
        await audience_repo.GroupRepository(conn).delete(group_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/groups/{group_id}/members", response_model=MembersAdded)
async def add_members(group_id: GroupId, body: MembersIn, runtime: RuntimeDep) -> MembersAdded:
    """Add members to a static group; an address it already has is skipped and counted."""
    _within_limit(runtime, body.members, ["body", "members"])
    async with runtime.transaction() as conn:
        groups = audience_repo.GroupRepository(conn)
        if await groups.lock(group_id) != "static":
            raise Conflict("só um grupo estático recebe membros pela API")
        added = await groups.add_members(group_id, body.members)
        group = await groups.get(group_id)
    return MembersAdded(
        group_id=group_id, added=added, duplicates_ignored=len(body.members) - added, members=group.members
    )


@router.post("/groups/{group_id}/csv", status_code=status.HTTP_201_CREATED, response_model=ImportOut)
async def import_csv(
    group_id: GroupId,
    request: Request,
    runtime: RuntimeDep,
    filename: Annotated[str, Query(max_length=255)] = "",
) -> ImportOut:
    """Import a CSV file (the raw request body, streamed) into a CSV group; returns the counts.
    Rejected lines are stored and downloadable from `import-errors`."""
    async with runtime.pool.acquire() as conn:
        kind = (await audience_repo.GroupRepository(conn).get(group_id)).kind
    if kind != "csv":
        raise Conflict("só um grupo do tipo csv recebe arquivos")
    try:
        spooled = await csv_import.spool(request.stream(), runtime.state["csv_max_bytes"])
    except csv_import.TooLarge as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=str(exc)) from None
    try:
        async with runtime.transaction() as conn:
            await audience_repo.GroupRepository(conn).lock(group_id)
            return await csv_import.import_file(conn, group_id, spooled, filename)
    except CsvProblem as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    finally:
        spooled.close()


@router.get("/groups/{group_id}/import-errors")
async def import_errors(group_id: GroupId, runtime: RuntimeDep) -> StreamingResponse:
    """The rejected lines of the group's last CSV import, as a CSV download."""
    async with runtime.pool.acquire() as conn:
        last = await audience_repo.ImportRepository(conn).last(group_id)
    if last is None:
        raise NotFound(f"group {group_id} has no import")
    return StreamingResponse(
        csv_import.error_report(runtime.pool, last),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="erros-grupo-{group_id}-importacao-{last.import_id}.csv"'
        },
    )


@router.get("/groups/{group_id}/preview", response_model=Preview)
async def preview_group(
    group_id: GroupId, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> Preview:
    """The group's count, first rows and errors, without starting a campaign."""
    async with runtime.pool.acquire() as conn:
        groups = audience_repo.GroupRepository(conn)
        group = await groups.get(group_id)
        if group.kind != "remote":
            return await preview.stored(conn, group, limit)
        [source] = await groups.sources([group_id])
    remote = _remote(runtime)
    assert source.remote_url_encrypted is not None, "a remote group has a URL"
    return await preview.remote_group(
        group, remote.secrets.decrypt(source.remote_url_encrypted), limit, remote
    )
