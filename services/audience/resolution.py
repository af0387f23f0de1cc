"""Resolving a started campaign: its groups become numbered recipients, or the campaign fails.

States: `resolving` -> `resolved` (the dispatcher then queues it) -> `dispatched`, or `failed`.

The groups are read into `staged_members` in group order: static and CSV groups by one
statement each, remote groups page by page through COPY, every address checked. Each step
commits on its own, so a remote fetch of a million records holds no long transaction. Only
when every group is read does one transaction de-duplicate, subtract the suppressed and the
unsubscribed, number the recipients, mark the campaign resolved and queue the event.

Crash safety: the campaign.started message is acknowledged only after that, so a crash at any
point redelivers it; a campaign still `resolving` then starts over from an empty staging (what
an interrupted attempt staged is deleted first), and a resolved or failed one is left alone.
One connection holds the campaign's advisory lock for the whole resolution, so two deliveries
of the same start never stage at once.

A group that cannot be read (missing, remote error) or that lacks a field the templates use
fails the campaign with a pt-BR reason before anything is queued.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

import asyncpg

from services.audience import repository as audience_repo
from services.audience.addresses import verdict
from services.audience.remote import RemoteGroupError, RemoteMember, RemoteOptions
from shared import outbox
from shared.contracts import CampaignFailed, CampaignRecipientsResolved, CampaignStarted
from shared.crypto import SecretBox
from shared.personalisation import BUILT_IN_VARIABLES, TemplateProblem, referenced_variables

log = logging.getLogger(__name__)

FetchRemote = Callable[[str, RemoteOptions], AsyncIterator[list[RemoteMember]]]
StagedRow = tuple[int, int, int, str, str, str | None]

# Rows per COPY from a remote group: a few pages, few round trips, little memory.
_COPY_ROWS = 10_000
_TERMINAL = frozenset({"resolved", "dispatched", "failed"})


class GroupFailed(Exception):
    """The campaign cannot be resolved; `reason` (pt-BR) is what the campaign shows."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Remote:
    """How remote groups are read: the fetcher, its options, and the key of stored URLs."""

    fetch: FetchRemote
    options: RemoteOptions
    secrets: SecretBox

    @asynccontextmanager
    async def pages(self, url: str) -> AsyncIterator[AsyncIterator[list[RemoteMember]]]:
        """The group's pages; closed on the way out, so stopping early cancels the pages in flight."""
        pages = self.fetch(url, self.options)
        try:
            yield pages
        finally:
            close = getattr(pages, "aclose", None)
            if close is not None:
                await close()


def check_groups(event: CampaignStarted, groups: list[audience_repo.GroupSource]) -> None:
    """Every group exists and has every custom field the templates read; raises GroupFailed."""
    found = {g.group_id for g in groups}
    missing = [str(g) for g in event.group_ids if g not in found]
    if missing:
        raise GroupFailed(f"grupo(s) não encontrado(s): {', '.join(missing)}")
    try:
        used = referenced_variables(event.subject, event.html, event.text or "") - BUILT_IN_VARIABLES
    except TemplateProblem as exc:
        raise GroupFailed(f"modelo inválido: {exc}") from exc
    for group in groups:
        absent = sorted(used - set(group.fields))
        if absent:
            raise GroupFailed(f"campo de personalização '{absent[0]}' não existe no grupo '{group.name}'")


def _staged(campaign_id: int, position: int, seq: int, member: RemoteMember) -> StagedRow:
    email, invalid = verdict(member.email)
    return campaign_id, position, seq, email, member.name.strip(), invalid


async def _stage_remote(
    conn: asyncpg.Connection,
    campaign_id: int,
    position: int,
    group: audience_repo.GroupSource,
    remote: Remote,
) -> None:
    assert group.remote_url_encrypted is not None, "a remote group has a URL"
    url = remote.secrets.decrypt(group.remote_url_encrypted)
    resolutions = audience_repo.ResolutionRepository(conn)
    rows: list[StagedRow] = []
    seq = 0
    try:
        async with remote.pages(url) as pages:
            async for page in pages:
                for member in page:
                    seq += 1
                    rows.append(_staged(campaign_id, position, seq, member))
                if len(rows) >= _COPY_ROWS:
                    await resolutions.copy_staged(rows)
                    rows = []
    except RemoteGroupError as exc:
        where = f" (página {exc.page})" if exc.page is not None else ""
        raise GroupFailed(f"grupo '{group.name}'{where}: {exc.reason}") from exc
    if rows:
        await resolutions.copy_staged(rows)


async def _stage(conn: asyncpg.Connection, event: CampaignStarted, remote: Remote) -> None:
    async with conn.transaction():
        groups = await audience_repo.GroupRepository(conn).sources(event.group_ids)
    check_groups(event, groups)
    for position, group in enumerate(groups, start=1):
        if group.kind == "remote":
            await _stage_remote(conn, event.campaign_id, position, group, remote)
        else:
            await audience_repo.ResolutionRepository(conn).stage_group(
                event.campaign_id, position, group.group_id
            )
    if event.recipients:
        # An API send's inline recipients, after the groups (campaign checked their fields).
        rows = []
        for person in event.recipients:
            email, invalid = verdict(person.email)
            rows.append((person.recipient_id, email, person.name.strip(), json.dumps(person.fields), invalid))
        await audience_repo.ResolutionRepository(conn).stage_inline(event.campaign_id, len(groups) + 1, rows)


async def resolve(
    conn: asyncpg.Connection, event: CampaignStarted, trace: dict[str, str], remote: Remote
) -> bool:
    """Resolve the campaign on this connection (not in a transaction); True when it became
    resolved now (the dispatcher has work), False when it failed or was already done."""
    resolutions = audience_repo.ResolutionRepository(conn)
    await resolutions.lock(event.campaign_id)
    try:
        async with conn.transaction():
            if await resolutions.status(event.campaign_id) in _TERMINAL:
                return False
            await resolutions.begin(event.campaign_id, event.account_id, event.priority, trace)
        try:
            await _stage(conn, event, remote)
        except GroupFailed as exc:
            log.warning("campaign %d failed to resolve: %s", event.campaign_id, exc.reason)
            async with conn.transaction():
                await resolutions.record_failure(
                    event.campaign_id, event.account_id, event.priority, exc.reason
                )
                await outbox.add_event(conn, CampaignFailed(campaign_id=event.campaign_id, reason=exc.reason))
            return False
        async with conn.transaction():
            counts = await resolutions.finish(event.campaign_id)
            await outbox.add_event(
                conn,
                CampaignRecipientsResolved(
                    campaign_id=event.campaign_id, account_id=event.account_id, **asdict(counts)
                ),
            )
        return True
    finally:
        # A broken connection cannot unlock, but going back to the pool resets (or closes) it,
        # which releases the lock all the same: never let this hide the error being raised.
        with contextlib.suppress(Exception):
            await resolutions.unlock(event.campaign_id)
