"""All SQL of the audience service. Repositories use the connection they are given; the caller
owns the transaction."""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from pydantic import TypeAdapter

from services.audience.models import GroupOut, ImportOut, MemberIn, PreviewError, PreviewRow, Resolution
from shared.contracts import Recipient
from shared.errors import NotFound

# --- groups -----------------------------------------------------------------------------------

INSERT_GROUP = """
INSERT INTO groups (name, kind, remote_url_encrypted, remote_url_redacted) VALUES ($1, $2, $3, $4)
RETURNING group_id
"""
# Locks the group's row: members added by concurrent requests count and merge fields one by one.
LOCK_GROUP = "SELECT kind FROM groups WHERE group_id = $1 FOR UPDATE"
INSERT_MEMBERS = """
WITH fresh AS (
    INSERT INTO group_members (group_id, email, name, fields)
    SELECT $1, m.email, m.name, m.fields::jsonb
    FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS m(email, name, fields, n)
    ORDER BY m.n
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM fresh
"""
# The group's fields are those every member has: a first batch sets them, later ones narrow them.
# (Every expression reads the row as it was before the update.)
COUNT_MEMBERS = """
UPDATE groups SET
    member_count = member_count + $2,
    fields = CASE WHEN member_count = 0 THEN $3::text[]
                  ELSE ARRAY(SELECT unnest(fields) INTERSECT SELECT unnest($3::text[]) ORDER BY 1) END,
    updated_at = now()
WHERE group_id = $1
"""
_GROUP_COLUMNS = """
SELECT group_id, name, kind, member_count AS members, fields, remote_url_redacted AS url,
       created_at, updated_at
FROM groups
"""
SELECT_GROUP = _GROUP_COLUMNS + " WHERE group_id = $1"
# Keyset paging: the console asks for the page after the last id it showed.
SELECT_GROUPS = _GROUP_COLUMNS + " WHERE group_id > $1 ORDER BY group_id LIMIT $2"
RENAME_GROUP = "UPDATE groups SET name = $2, updated_at = now() WHERE group_id = $1 RETURNING 1"
DELETE_MEMBERS = "DELETE FROM group_members WHERE group_id = $1"
DELETE_GROUP = "DELETE FROM groups WHERE group_id = $1"
MISSING_GROUPS = """
SELECT id FROM unnest($1::int[]) AS id WHERE NOT EXISTS (SELECT 1 FROM groups WHERE group_id = id)
"""
# The campaign's groups in its order, with what resolution needs to read them.
SELECT_SOURCES = """
SELECT g.group_id, g.name, g.kind, g.fields, g.remote_url_encrypted, g.remote_url_redacted
FROM unnest($1::int[]) WITH ORDINALITY AS c(group_id, position)
JOIN groups g USING (group_id)
ORDER BY c.position
"""
FIRST_MEMBERS = """
SELECT email, name, fields FROM group_members WHERE group_id = $1 ORDER BY member_id LIMIT $2
"""

# --- CSV imports ------------------------------------------------------------------------------

INSERT_IMPORT = """
INSERT INTO imports (group_id, filename, encoding, delimiter, rows, imported, invalid, duplicate)
VALUES ($1, $2, $3, $4, 0, 0, 0, 0) RETURNING import_id
"""
# Each chunk of the file's valid rows lands here by COPY, moves to group_members in one
# statement, and the table is emptied for the next chunk. `vals` are the custom fields' values,
# paired with their keys by PostgreSQL (binary COPY has no jsonb encoder, and building JSON per
# row in Python cost more than the whole COPY).
CREATE_IMPORT_ROWS = """
CREATE TEMPORARY TABLE import_rows (line integer, email text, name text, vals text[]) ON COMMIT DROP
"""
# Chunks go in file order, rows in line order, and the unique index on lower(email) skips every
# later repeat: the first occurrence in the file wins, member_id (the group's order) follows the
# file, and an address the group already had is skipped the same way.
IMPORT_MEMBERS = """
WITH fresh AS (
    INSERT INTO group_members (group_id, email, name, fields)
    SELECT $1, email, name, jsonb_object($2::text[], vals) FROM import_rows ORDER BY line
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM fresh
"""
EMPTY_IMPORT_ROWS = "TRUNCATE import_rows"
FINISH_IMPORT = """
UPDATE imports SET rows = $2, imported = $3, invalid = $4, duplicate = $5 WHERE import_id = $1
RETURNING *
"""
LAST_IMPORT = "SELECT * FROM imports WHERE group_id = $1 ORDER BY import_id DESC LIMIT 1"
FIRST_IMPORT_ERRORS = """
SELECT line, reason, content FROM import_errors WHERE import_id = $1 ORDER BY line LIMIT $2
"""
ALL_IMPORT_ERRORS = "SELECT line, reason, content FROM import_errors WHERE import_id = $1 ORDER BY line"

# A resolution's set-wide statement over a million rows sorts in memory, not in temporary files.
SORT_IN_MEMORY = "SET LOCAL work_mem = '128MB'"

# --- suppression and unsubscribes -------------------------------------------------------------

# A state change applies only if it is not older than the state it replaces: events may arrive
# out of order (retries), and a late "suppressed" must not undo a newer "unsuppressed".
SET_SUPPRESSION = """
INSERT INTO suppressions (email_key, suppressed, reason, changed_at) VALUES (lower($1), $2, $3, $4)
ON CONFLICT (email_key) DO UPDATE
SET suppressed = excluded.suppressed, reason = excluded.reason, changed_at = excluded.changed_at
WHERE suppressions.changed_at <= excluded.changed_at
"""
# Global unsubscribes are never undone by an event: the first one is kept.
INSERT_UNSUBSCRIBE = """
INSERT INTO unsubscribes (email_key, reason, unsubscribed_at) VALUES (lower($1), $2, $3)
ON CONFLICT (email_key) DO NOTHING
"""

# --- resolutions ------------------------------------------------------------------------------

# Held by the connection that resolves the campaign, for the whole resolution (many short
# transactions): a second delivery of the same start waits, then sees the outcome.
LOCK_CAMPAIGN = "SELECT pg_advisory_lock(hashtext('audience.resolve'), $1)"
UNLOCK_CAMPAIGN = "SELECT pg_advisory_unlock(hashtext('audience.resolve'), $1)"
RESOLUTION_STATUS = "SELECT status FROM resolutions WHERE campaign_id = $1"
# A 'resolving' row left by a crash starts over: its staging is thrown away below.
BEGIN_RESOLUTION = """
INSERT INTO resolutions (campaign_id, account_id, priority, status, trace_headers)
VALUES ($1, $2, $3, 'resolving', $4)
ON CONFLICT (campaign_id) DO UPDATE SET attempts = resolutions.attempts + 1
"""
CLEAR_STAGING = "DELETE FROM staged_members WHERE campaign_id = $1"
FAIL_RESOLUTION = """
INSERT INTO resolutions (campaign_id, account_id, priority, status, failure_reason)
VALUES ($1, $2, $3, 'failed', $4)
ON CONFLICT (campaign_id) DO UPDATE SET status = 'failed', failure_reason = excluded.failure_reason
"""
# Members of static and CSV groups were checked when they were added: copied as valid.
STAGE_GROUP = """
INSERT INTO staged_members (campaign_id, position, seq, email, name, fields)
SELECT $1, $2, member_id, email, name, fields FROM group_members WHERE group_id = $3
"""
STAGED_COLUMNS = ("campaign_id", "position", "seq", "email", "name", "invalid")
# An API send's inline recipients (at most 1000, carried by campaign.started), with their fields.
STAGE_INLINE = """
INSERT INTO staged_members (campaign_id, position, seq, email, name, fields, invalid)
SELECT $1, $2, r.seq, r.email, r.name, r.fields::jsonb, r.invalid
FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) AS r(seq, email, name, fields, invalid)
"""
# The campaign's audience: valid addresses once each (case-insensitive, first in group order
# wins), less the suppressed and the globally unsubscribed, numbered 1..n in group order.
FINISH_RESOLUTION = """
WITH valid AS (
    SELECT position, seq, email, name, fields, lower(email) AS email_key
    FROM staged_members WHERE campaign_id = $1 AND invalid IS NULL
), first_seen AS (
    SELECT DISTINCT ON (email_key) * FROM valid ORDER BY email_key, position, seq
), checked AS (
    SELECT f.*,
           EXISTS (SELECT 1 FROM suppressions s WHERE s.email_key = f.email_key AND s.suppressed) AS suppressed,
           EXISTS (SELECT 1 FROM unsubscribes u WHERE u.email_key = f.email_key) AS unsubscribed
    FROM first_seen f
), staged AS (
    INSERT INTO campaign_recipients (campaign_id, recipient_id, email, name, fields)
    SELECT $1, row_number() OVER (ORDER BY position, seq), email, name, fields
    FROM checked WHERE NOT suppressed AND NOT unsubscribed
    RETURNING 1
)
SELECT (SELECT count(*) FROM staged) AS included,
       (SELECT count(*) FROM staged_members WHERE campaign_id = $1 AND invalid IS NOT NULL) AS invalid,
       (SELECT count(*) FROM valid) - (SELECT count(*) FROM first_seen) AS duplicate,
       (SELECT count(*) FROM checked WHERE suppressed) AS suppressed,
       (SELECT count(*) FROM checked WHERE unsubscribed AND NOT suppressed) AS unsubscribed
"""
SET_RESOLVED = """
UPDATE resolutions
SET status = 'resolved', included = $2, invalid = $3, duplicate = $4, suppressed = $5,
    unsubscribed = $6, resolved_at = now()
WHERE campaign_id = $1
"""
# One dispatcher at a time keeps every campaign's batches contiguous in its account's queue.
LOCK_DISPATCH = "SELECT pg_try_advisory_xact_lock(hashtext('audience.dispatch'))"
# Oldest first: campaigns reach their account's queue in the order they were resolved.
NEXT_PENDING = """
SELECT campaign_id, account_id, priority, included, dispatched_upto, trace_headers
FROM resolutions WHERE status = 'resolved' ORDER BY resolved_at, campaign_id LIMIT 1
"""
# Recipients are numbered 1..n without gaps, so the window is a closed id range: right after a
# million rows are loaded the planner has no statistics, and `> $2 ... LIMIT` made it read and
# sort every remaining row for each window (quadratic). One JSON array for the window, built by
# PostgreSQL and parsed by pydantic-core in one call, spares decoding rows one by one.
SELECT_BATCH = """
SELECT coalesce(json_agg(json_build_object(
           'recipient_id', recipient_id, 'email', email, 'name', name, 'fields', fields
       ) ORDER BY recipient_id), '[]')::text
FROM campaign_recipients
WHERE campaign_id = $1 AND recipient_id > $2 AND recipient_id <= $2 + $3
"""
ADVANCE = """
UPDATE resolutions
SET dispatched_upto = $2,
    status = CASE WHEN $2 >= included THEN 'dispatched' ELSE status END,
    dispatched_at = CASE WHEN $2 >= included THEN now() ELSE dispatched_at END
WHERE campaign_id = $1
"""


_RECIPIENTS = TypeAdapter(list[Recipient])


def _common_fields(members: Sequence[MemberIn]) -> list[str]:
    keys = [set(m.fields) for m in members]
    return sorted(set.intersection(*keys)) if keys else []


class GroupRepository:
    """Groups and their members."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def create(
        self, name: str, kind: str, url_encrypted: str | None = None, url_redacted: str | None = None
    ) -> int:
        """Store an empty group; a remote one with its URL (encrypted, and redacted for display)."""
        group_id: int = await self._conn.fetchval(INSERT_GROUP, name, kind, url_encrypted, url_redacted)
        return group_id

    async def lock(self, group_id: int) -> str:
        """Lock the group until the transaction ends; its kind. NotFound if there is none."""
        kind: str | None = await self._conn.fetchval(LOCK_GROUP, group_id)
        if kind is None:
            raise NotFound(f"group {group_id} not found")
        return kind

    async def add_members(self, group_id: int, members: Sequence[MemberIn]) -> int:
        """Add members (an address the group has, in any letter case, is skipped); how many were new."""
        added: int = await self._conn.fetchval(
            INSERT_MEMBERS,
            group_id,
            [m.email for m in members],
            [m.name for m in members],
            [json.dumps(m.fields) for m in members],
        )
        await self.count_members(group_id, added, _common_fields(members))
        return added

    async def count_members(self, group_id: int, added: int, fields: Iterable[str]) -> None:
        """Account for `added` new members that all have `fields`."""
        await self._conn.execute(COUNT_MEMBERS, group_id, added, sorted(fields))

    async def get(self, group_id: int) -> GroupOut:
        """The group with its member count; NotFound if there is none."""
        row = await self._conn.fetchrow(SELECT_GROUP, group_id)
        if row is None:
            raise NotFound(f"group {group_id} not found")
        return GroupOut.model_validate(dict(row))

    async def list(self, after: int = 0, limit: int = 100) -> builtins.list[GroupOut]:
        """Up to `limit` groups after the id `after`, in id order, with their member counts."""
        rows = await self._conn.fetch(SELECT_GROUPS, after, limit)
        return [GroupOut.model_validate(dict(r)) for r in rows]

    async def rename(self, group_id: int, name: str) -> None:
        """Give the group a new name; NotFound if there is none."""
        if await self._conn.fetchval(RENAME_GROUP, group_id, name) is None:
            raise NotFound(f"group {group_id} not found")

    async def delete(self, group_id: int) -> None:
        """Delete the group, its members and imports; NotFound if there is none.

        Members have no foreign key (see the 2026-11-25 migration): the lock waits for any
        transaction adding members to end, and the members' DELETE, a statement of its own,
        sees what it added."""
        await self.lock(group_id)
        await self._conn.execute(DELETE_MEMBERS, group_id)
        await self._conn.execute(DELETE_GROUP, group_id)

    # `builtins.list`: inside this class, `list` is the method above.
    async def missing(self, group_ids: builtins.list[int]) -> builtins.list[int]:
        """Which of these groups do not exist."""
        return [r["id"] for r in await self._conn.fetch(MISSING_GROUPS, group_ids)]

    async def sources(self, group_ids: builtins.list[int]) -> builtins.list[GroupSource]:
        """The existing groups among these, in the given order."""
        return [GroupSource(**dict(r)) for r in await self._conn.fetch(SELECT_SOURCES, group_ids)]

    async def first_members(self, group_id: int, limit: int) -> builtins.list[PreviewRow]:
        """The group's first members, in the order they were added."""
        rows = await self._conn.fetch(FIRST_MEMBERS, group_id, limit)
        return [PreviewRow.model_validate(dict(r)) for r in rows]


@dataclass(frozen=True)
class GroupSource:
    """What resolving a campaign needs of one of its groups."""

    group_id: int
    name: str
    kind: str
    fields: list[str]
    remote_url_encrypted: str | None
    remote_url_redacted: str | None


class ImportRepository:
    """CSV imports of a group: rows by COPY, rejected lines kept for download."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def start(self, group_id: int, filename: str, encoding: str, delimiter: str) -> int:
        """Record the import and prepare this transaction's staging table; the import id."""
        import_id: int = await self._conn.fetchval(INSERT_IMPORT, group_id, filename, encoding, delimiter)
        await self._conn.execute(CREATE_IMPORT_ROWS)
        return import_id

    async def add_rows(
        self, group_id: int, keys: Sequence[str], rows: Sequence[tuple[int, str, str, Sequence[str]]]
    ) -> int:
        """Add a chunk of valid rows (line, email, name, values of `keys`) to the group through
        COPY; how many were new members."""
        await self._conn.copy_records_to_table("import_rows", records=rows)
        added: int = await self._conn.fetchval(IMPORT_MEMBERS, group_id, list(keys))
        await self._conn.execute(EMPTY_IMPORT_ROWS)
        return added

    async def copy_errors(self, errors: Sequence[tuple[int, int, str, str]]) -> None:
        """COPY rejected rows (import id, line, reason, content)."""
        await self._conn.copy_records_to_table("import_errors", records=errors)

    async def finish(self, import_id: int, rows: int, imported: int, invalid: int) -> ImportOut:
        """Record the import's counts; the import."""
        duplicate = rows - invalid - imported
        row = await self._conn.fetchrow(FINISH_IMPORT, import_id, rows, imported, invalid, duplicate)
        return ImportOut.model_validate(dict(row))

    async def last(self, group_id: int) -> ImportOut | None:
        """The group's latest import."""
        row = await self._conn.fetchrow(LAST_IMPORT, group_id)
        return None if row is None else ImportOut.model_validate(dict(row))

    async def first_errors(self, import_id: int, limit: int) -> builtins.list[PreviewError]:
        """The import's first rejected lines."""
        rows = await self._conn.fetch(FIRST_IMPORT_ERRORS, import_id, limit)
        return [PreviewError.model_validate(dict(r)) for r in rows]

    async def errors(self, import_id: int) -> AsyncIterator[tuple[int, str, str]]:
        """Every rejected line of the import, read by a cursor (the caller holds a transaction)."""
        async for row in self._conn.cursor(ALL_IMPORT_ERRORS, import_id, prefetch=1000):
            yield row["line"], row["reason"], row["content"]


class SuppressionRepository:
    """Audience's copies of the shared suppression list and of the global unsubscribes."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def set_suppressed(self, email: str, suppressed: bool, reason: str, at: datetime) -> None:
        """Record the address's suppression state as of `at`, unless a newer state is known."""
        await self._conn.execute(SET_SUPPRESSION, email, suppressed, reason, at)

    async def unsubscribe(self, email: str, reason: str, at: datetime) -> None:
        """Record a global unsubscribe (the first one is kept)."""
        await self._conn.execute(INSERT_UNSUBSCRIBE, email, reason, at)


@dataclass(frozen=True)
class Counts:
    """What a campaign's resolution found."""

    included: int
    invalid: int
    duplicate: int
    suppressed: int
    unsubscribed: int


class ResolutionRepository:
    """Campaign resolutions: staged members, resolved recipients and the dispatch checkpoint."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def lock(self, campaign_id: int) -> None:
        """Wait for, then hold, the campaign's resolution lock (session-level: across transactions)."""
        await self._conn.execute(LOCK_CAMPAIGN, campaign_id)

    async def unlock(self, campaign_id: int) -> None:
        """Release the campaign's resolution lock."""
        await self._conn.execute(UNLOCK_CAMPAIGN, campaign_id)

    async def status(self, campaign_id: int) -> str | None:
        """The campaign's resolution status, None if it was never started."""
        status: str | None = await self._conn.fetchval(RESOLUTION_STATUS, campaign_id)
        return status

    async def begin(self, campaign_id: int, account_id: int, priority: int, trace: dict[str, str]) -> None:
        """Mark the campaign resolving, throwing away what an interrupted attempt staged."""
        await self._conn.execute(BEGIN_RESOLUTION, campaign_id, account_id, priority, trace)
        await self._conn.execute(CLEAR_STAGING, campaign_id)

    async def record_failure(self, campaign_id: int, account_id: int, priority: int, reason: str) -> None:
        """Remember that the campaign could not be resolved, and why; drop what was staged."""
        await self._conn.execute(FAIL_RESOLUTION, campaign_id, account_id, priority, reason)
        await self._conn.execute(CLEAR_STAGING, campaign_id)

    async def stage_group(self, campaign_id: int, position: int, group_id: int) -> None:
        """Stage every member of a static or CSV group, server-side (no row crosses the wire)."""
        await self._conn.execute(STAGE_GROUP, campaign_id, position, group_id)

    async def stage_inline(
        self, campaign_id: int, position: int, rows: Sequence[tuple[int, str, str, str, str | None]]
    ) -> None:
        """Stage inline recipients: (seq, email, name, fields as JSON text, why invalid or None)."""
        columns: list[list[object]] = [[row[i] for row in rows] for i in range(5)]
        await self._conn.execute(STAGE_INLINE, campaign_id, position, *columns)

    async def copy_staged(self, rows: Sequence[tuple[int, int, int, str, str, str | None]]) -> None:
        """COPY read members (campaign, position, seq, email, name, why invalid or None)."""
        await self._conn.copy_records_to_table("staged_members", records=rows, columns=STAGED_COLUMNS)

    async def finish(self, campaign_id: int) -> Counts:
        """Turn the staged members into the numbered recipients; the campaign is then resolved."""
        await self._conn.execute(SORT_IN_MEMORY)
        row = await self._conn.fetchrow(FINISH_RESOLUTION, campaign_id)
        counts = Counts(**{k: int(v) for k, v in dict(row).items()})
        await self._conn.execute(
            SET_RESOLVED,
            campaign_id,
            counts.included,
            counts.invalid,
            counts.duplicate,
            counts.suppressed,
            counts.unsubscribed,
        )
        await self._conn.execute(CLEAR_STAGING, campaign_id)
        return counts

    async def lock_dispatch(self) -> bool:
        """Take the dispatch lock for this transaction; False if another dispatcher has it."""
        return bool(await self._conn.fetchval(LOCK_DISPATCH))

    async def next_pending(self) -> Resolution | None:
        """The oldest resolved campaign not fully dispatched yet."""
        row = await self._conn.fetchrow(NEXT_PENDING)
        return None if row is None else Resolution.model_validate(dict(row))

    async def batch(self, campaign_id: int, after: int, size: int) -> list[Recipient]:
        """The next recipients after the checkpoint, in order."""
        return _RECIPIENTS.validate_json(await self._conn.fetchval(SELECT_BATCH, campaign_id, after, size))

    async def advance(self, campaign_id: int, upto: int) -> None:
        """Move the checkpoint; the resolution is dispatched once it reaches the last recipient."""
        await self._conn.execute(ADVANCE, campaign_id, upto)
