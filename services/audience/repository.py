"""All SQL of the audience service. Repositories use the connection they are given; the caller
owns the transaction."""

from __future__ import annotations

import builtins
import json

import asyncpg

from services.audience.models import GroupOut, MemberIn, Resolution
from shared.contracts import Recipient
from shared.errors import NotFound

INSERT_GROUP = "INSERT INTO groups (name, kind) VALUES ($1, 'static') RETURNING group_id"
INSERT_MEMBERS = """
INSERT INTO group_members (group_id, email, name, fields)
SELECT $1, m.email, m.name, m.fields::jsonb
FROM unnest($2::text[], $3::text[], $4::text[]) AS m(email, name, fields)
ON CONFLICT DO NOTHING
"""
_GROUP_COLUMNS = """
SELECT g.group_id, g.name, g.kind, g.created_at,
       (SELECT count(*) FROM group_members m WHERE m.group_id = g.group_id) AS members
FROM groups g
"""
SELECT_GROUP = _GROUP_COLUMNS + " WHERE g.group_id = $1"
SELECT_GROUPS = _GROUP_COLUMNS + " ORDER BY g.group_id"
MISSING_GROUPS = """
SELECT id FROM unnest($1::int[]) AS id WHERE NOT EXISTS (SELECT 1 FROM groups WHERE group_id = id)
"""

# Deliveries are handled concurrently (prefetch): a second start of the same campaign under another
# event id waits here for the first to commit, then sees its resolution instead of hitting the
# primary key (which sent it to the retry tier).
LOCK_CAMPAIGN = "SELECT pg_advisory_xact_lock(hashtext('audience.resolve'), $1)"
RESOLUTION_EXISTS = "SELECT EXISTS (SELECT 1 FROM resolutions WHERE campaign_id = $1)"
INSERT_RESOLUTION = """
INSERT INTO resolutions (campaign_id, account_id, priority, status, failure_reason, trace_headers)
VALUES ($1, $2, $3, $4, $5, $6)
"""
# The campaign's audience: each address once (case-insensitive), kept where it first appears in
# the chosen group order, numbered 1..n in that order. Returns how many members were read.
STAGE_RECIPIENTS = """
WITH members AS (
    SELECT m.email, m.name, m.fields, g.position, m.member_id
    FROM unnest($2::int[]) WITH ORDINALITY AS g(group_id, position)
    JOIN group_members m ON m.group_id = g.group_id
), first_seen AS (
    SELECT DISTINCT ON (lower(email)) email, name, fields, position, member_id
    FROM members
    ORDER BY lower(email), position, member_id
), staged AS (
    INSERT INTO campaign_recipients (campaign_id, recipient_id, email, name, fields)
    SELECT $1, row_number() OVER (ORDER BY position, member_id), email, name, fields FROM first_seen
    RETURNING 1
)
SELECT (SELECT count(*) FROM staged) AS included, (SELECT count(*) FROM members) AS read
"""
SET_COUNTS = "UPDATE resolutions SET included = $2, duplicate = $3 WHERE campaign_id = $1"
# One dispatcher at a time keeps every campaign's batches contiguous in its account's queue.
LOCK_DISPATCH = "SELECT pg_try_advisory_xact_lock(hashtext('audience.dispatch'))"
# Oldest first: campaigns reach their account's queue in the order they were resolved.
NEXT_PENDING = """
SELECT campaign_id, account_id, priority, included, dispatched_upto, trace_headers
FROM resolutions WHERE status = 'resolved' ORDER BY resolved_at, campaign_id LIMIT 1
"""
SELECT_BATCH = """
SELECT recipient_id, email, name, fields FROM campaign_recipients
WHERE campaign_id = $1 AND recipient_id > $2 ORDER BY recipient_id LIMIT $3
"""
ADVANCE = """
UPDATE resolutions
SET dispatched_upto = $2,
    status = CASE WHEN $2 >= included THEN 'dispatched' ELSE status END,
    dispatched_at = CASE WHEN $2 >= included THEN now() ELSE dispatched_at END
WHERE campaign_id = $1
"""


class GroupRepository:
    """Groups and their members."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def create_static(self, name: str, members: list[MemberIn]) -> int:
        """Store a static group and its members (the first of repeated addresses wins)."""
        group_id: int = await self._conn.fetchval(INSERT_GROUP, name)
        await self._conn.execute(
            INSERT_MEMBERS,
            group_id,
            [m.email for m in members],
            [m.name for m in members],
            [json.dumps(m.fields) for m in members],
        )
        return group_id

    async def get(self, group_id: int) -> GroupOut:
        """The group with its member count; NotFound if there is none."""
        row = await self._conn.fetchrow(SELECT_GROUP, group_id)
        if row is None:
            raise NotFound(f"group {group_id} not found")
        return GroupOut.model_validate(dict(row))

    async def list(self) -> list[GroupOut]:
        """Every group with its member count."""
        return [GroupOut.model_validate(dict(r)) for r in await self._conn.fetch(SELECT_GROUPS)]

    # `builtins.list`: inside this class, `list` is the method above.
    async def missing(self, group_ids: builtins.list[int]) -> builtins.list[int]:
        """Which of these groups do not exist."""
        return [r["id"] for r in await self._conn.fetch(MISSING_GROUPS, group_ids)]


class ResolutionRepository:
    """Campaign resolutions: staged recipients and the dispatch checkpoint."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def exists(self, campaign_id: int) -> bool:
        """Whether this campaign was already resolved (or failed to be); holds the campaign's lock
        until the caller's transaction ends."""
        await self._conn.execute(LOCK_CAMPAIGN, campaign_id)
        return bool(await self._conn.fetchval(RESOLUTION_EXISTS, campaign_id))

    async def record_failure(self, campaign_id: int, account_id: int, priority: int, reason: str) -> None:
        """Remember that the campaign could not be resolved, and why."""
        await self._conn.execute(INSERT_RESOLUTION, campaign_id, account_id, priority, "failed", reason, {})

    async def resolve(
        self,
        campaign_id: int,
        account_id: int,
        priority: int,
        group_ids: list[int],
        trace_headers: dict[str, str],
    ) -> tuple[int, int]:
        """Stage the campaign's de-duplicated recipients; return (included, duplicates)."""
        await self._conn.execute(
            INSERT_RESOLUTION, campaign_id, account_id, priority, "resolved", None, trace_headers
        )
        row = await self._conn.fetchrow(STAGE_RECIPIENTS, campaign_id, group_ids)
        included, duplicates = int(row["included"]), int(row["read"]) - int(row["included"])
        await self._conn.execute(SET_COUNTS, campaign_id, included, duplicates)
        return included, duplicates

    async def lock_dispatch(self) -> bool:
        """Take the dispatch lock for this transaction; False if another dispatcher has it."""
        return bool(await self._conn.fetchval(LOCK_DISPATCH))

    async def next_pending(self) -> Resolution | None:
        """The oldest resolved campaign not fully dispatched yet."""
        row = await self._conn.fetchrow(NEXT_PENDING)
        return None if row is None else Resolution.model_validate(dict(row))

    async def batch(self, campaign_id: int, after: int, size: int) -> list[Recipient]:
        """The next recipients after the checkpoint, in order."""
        rows = await self._conn.fetch(SELECT_BATCH, campaign_id, after, size)
        return [Recipient.model_validate(dict(r)) for r in rows]

    async def advance(self, campaign_id: int, upto: int) -> None:
        """Move the checkpoint; the resolution is dispatched once it reaches the last recipient."""
        await self._conn.execute(ADVANCE, campaign_id, upto)
