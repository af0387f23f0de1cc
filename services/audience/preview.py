"""A group's preview for the console: its count, first rows and errors, read without starting a
campaign. A remote group is read only as far as the rows shown (its first page or pages)."""

from __future__ import annotations

import asyncpg

from services.audience import repository as audience_repo
from services.audience.addresses import verdict
from services.audience.models import GroupOut, Preview, PreviewError, PreviewRow
from services.audience.remote import RemoteGroupError
from services.audience.resolution import Remote


async def stored(conn: asyncpg.Connection, group: GroupOut, limit: int) -> Preview:
    """A static or CSV group: its first members, and the first rejected lines of its last import."""
    imports = audience_repo.ImportRepository(conn)
    last = await imports.last(group.group_id)
    return Preview(
        group_id=group.group_id,
        kind=group.kind,
        members=group.members,
        rows=await audience_repo.GroupRepository(conn).first_members(group.group_id, limit),
        errors=[] if last is None else await imports.first_errors(last.import_id, limit),
        last_import=last,
    )


async def remote_group(group: GroupOut, url: str, limit: int, remote: Remote) -> Preview:
    """A remote group: records from its first page(s) until `limit` are shown, each address
    checked as resolution would; a page that cannot be read is an error naming it."""
    rows: list[PreviewRow] = []
    errors: list[PreviewError] = []
    page_number = 0
    try:
        async with remote.pages(url) as pages:
            async for page in pages:
                page_number += 1
                for member in page:
                    email, invalid = verdict(member.email)
                    if invalid is None:
                        rows.append(PreviewRow(email=email, name=member.name.strip(), fields={}))
                    else:
                        errors.append(PreviewError(reason=invalid, page=page_number, content=email))
                if len(rows) + len(errors) >= limit:
                    break
    except RemoteGroupError as exc:
        errors.append(PreviewError(reason=exc.reason, page=exc.page))
    return Preview(group_id=group.group_id, kind=group.kind, members=None, rows=rows[:limit], errors=errors)
