"""All SQL of the reputation brake: bounce's copy of the accounts, the counts, the brake's
pauses and overrides, and the rates history. The caller owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from shared.contracts import AccountConfigured, SesConnection

MINUTE = timedelta(minutes=1)

# A configuration older than the one stored (delivered late or again) changes nothing.
UPSERT_ACCOUNT = """
INSERT INTO reputation_accounts (account_id, name, transport, active, ses_region, ses_access_key_id,
    ses_secret_encrypted, ses_endpoint_url, bounce_control, bounce_threshold, complaint_threshold,
    pause_hours, configured_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (account_id) DO UPDATE SET
    name = EXCLUDED.name, transport = EXCLUDED.transport, active = EXCLUDED.active,
    ses_region = EXCLUDED.ses_region, ses_access_key_id = EXCLUDED.ses_access_key_id,
    ses_secret_encrypted = EXCLUDED.ses_secret_encrypted, ses_endpoint_url = EXCLUDED.ses_endpoint_url,
    bounce_control = EXCLUDED.bounce_control, bounce_threshold = EXCLUDED.bounce_threshold,
    complaint_threshold = EXCLUDED.complaint_threshold, pause_hours = EXCLUDED.pause_hours,
    configured_at = EXCLUDED.configured_at
WHERE reputation_accounts.configured_at < EXCLUDED.configured_at
"""
SELECT_ACTIVE_ACCOUNTS = "SELECT * FROM reputation_accounts WHERE active ORDER BY account_id"
SELECT_ACCOUNT = "SELECT * FROM reputation_accounts WHERE account_id = $1"

# One row per account and bucket (a minute unless the window is shortened; the column keeps its
# name): an event adds to its bucket's row. A 60-second date_bin is date_trunc('minute').
ADD_COUNTS = """
INSERT INTO reputation_counts (account_id, minute, sent, bounced, complained)
VALUES ($1, date_bin($6::interval, $2::timestamptz, timestamptz '2000-01-01 00:00:00+00'), $3, $4, $5)
ON CONFLICT (account_id, minute) DO UPDATE SET
    sent = reputation_counts.sent + EXCLUDED.sent,
    bounced = reputation_counts.bounced + EXCLUDED.bounced,
    complained = reputation_counts.complained + EXCLUDED.complained
"""
# The primary key's (account_id, minute) order serves this range scan.
SUM_COUNTS = """
SELECT coalesce(sum(sent), 0) AS sent, coalesce(sum(bounced), 0) AS bounced,
       coalesce(sum(complained), 0) AS complained
FROM reputation_counts WHERE account_id = $1 AND minute >= $2
"""
# Counts older than the window and history older than its retention are of no use any more.
PRUNE_COUNTS = "DELETE FROM reputation_counts WHERE minute < $1"
PRUNE_HISTORY = "DELETE FROM reputation_history WHERE polled_at < $1"

SELECT_PAUSE = "SELECT * FROM reputation_pauses WHERE account_id = $1"
INSERT_PAUSE = "INSERT INTO reputation_pauses (account_id, paused_at, until, reason) VALUES ($1, $2, $3, $4)"
DELETE_PAUSE = "DELETE FROM reputation_pauses WHERE account_id = $1"
# Only a pause that started before the other resume: a resume delivered late must not undo a
# pause the brake decided after it.
FORGET_PAUSE = "DELETE FROM reputation_pauses WHERE account_id = $1 AND paused_at < $2"

# The override in force: the latest one, unless cleared or past its date.
SELECT_OVERRIDE = """
SELECT * FROM reputation_overrides
WHERE account_id = $1 AND cleared_at IS NULL AND (until IS NULL OR until > $2)
ORDER BY override_id DESC LIMIT 1
"""
INSERT_OVERRIDE = """
INSERT INTO reputation_overrides (account_id, until, reason, set_by, set_at) VALUES ($1, $2, $3, $4, $5)
RETURNING *
"""
# Clears every open row, so a new override or a switch-off leaves no older one to come back.
CLEAR_OVERRIDES = """
UPDATE reputation_overrides SET cleared_by = $2, cleared_at = $3
WHERE account_id = $1 AND cleared_at IS NULL AND (until IS NULL OR until > $3)
"""

INSERT_HISTORY = """
INSERT INTO reputation_history (account_id, polled_at, source, bounce_rate, complaint_rate, sent, paused)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (account_id, polled_at) DO NOTHING
"""
SELECT_HISTORY = """
SELECT * FROM reputation_history WHERE account_id = $1 AND polled_at >= $2 ORDER BY polled_at
"""

# Transaction-scoped: released with the poll's transaction, even when the replica dies.
TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext($1))"


@dataclass(frozen=True)
class Account:
    """A sending account as the brake sees it."""

    account_id: int
    name: str
    transport: str
    ses: SesConnection | None
    bounce_control: bool
    bounce_threshold: float
    complaint_threshold: float
    pause_hours: float

    @property
    def reads_cloudwatch(self) -> bool:
        """Whether SES's own rates judge this account rather than our counts."""
        return self.bounce_control and self.ses is not None


@dataclass(frozen=True)
class Counts:
    """Sent, hard-bounced and complained messages of an account over a window."""

    sent: int
    bounced: int
    complained: int


@dataclass(frozen=True)
class Pause:
    """The brake's pause of an account."""

    paused_at: datetime
    until: datetime
    reason: str


@dataclass(frozen=True)
class Override:
    """An admin's decision to ignore the brake of an account (`until` None: until switched off)."""

    account_id: int
    until: datetime | None
    reason: str
    set_by: str
    set_at: datetime


@dataclass(frozen=True)
class Reading:
    """One poll's rates of an account (None: unknown) and the brake state that followed."""

    polled_at: datetime
    source: str
    bounce_rate: float | None
    complaint_rate: float | None
    sent: int | None
    paused: bool


def _account(row: asyncpg.Record) -> Account:
    ses = None
    if row["transport"] == "ses" and row["ses_region"]:
        ses = SesConnection(
            region=row["ses_region"],
            access_key_id=row["ses_access_key_id"],
            secret_access_key_encrypted=row["ses_secret_encrypted"],
            endpoint_url=row["ses_endpoint_url"],
        )
    return Account(
        account_id=row["account_id"],
        name=row["name"],
        transport=row["transport"],
        ses=ses,
        bounce_control=row["bounce_control"],
        bounce_threshold=row["bounce_threshold"],
        complaint_threshold=row["complaint_threshold"],
        pause_hours=row["pause_hours"],
    )


def _override(row: asyncpg.Record) -> Override:
    return Override(row["account_id"], row["until"], row["reason"], row["set_by"], row["set_at"])


class ReputationRepository:
    """The brake's tables, through the connection it is given."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def configure(self, event: AccountConfigured) -> None:
        """Keep the account's latest configuration."""
        ses = event.ses
        await self._conn.execute(
            UPSERT_ACCOUNT,
            event.account_id,
            event.name,
            event.transport,
            event.active,
            ses.region if ses else None,
            ses.access_key_id if ses else None,
            ses.secret_access_key_encrypted if ses else None,
            ses.endpoint_url if ses else None,
            event.bounce_control,
            event.bounce_threshold,
            event.complaint_threshold,
            event.pause_hours,
            event.occurred_at,
        )

    async def active_accounts(self) -> list[Account]:
        """The accounts the brake judges."""
        return [_account(row) for row in await self._conn.fetch(SELECT_ACTIVE_ACCOUNTS)]

    async def account(self, account_id: int) -> Account | None:
        """The account, if it was ever configured."""
        row = await self._conn.fetchrow(SELECT_ACCOUNT, account_id)
        return _account(row) if row else None

    async def add_counts(
        self,
        account_id: int,
        at: datetime,
        *,
        sent: int = 0,
        bounced: int = 0,
        complained: int = 0,
        bucket: timedelta = MINUTE,
    ) -> None:
        """Add to the account's counts of the bucket (a minute by default) of `at`."""
        await self._conn.execute(ADD_COUNTS, account_id, at, sent, bounced, complained, bucket)

    async def counts_since(self, account_id: int, since: datetime) -> Counts:
        """The account's counts from `since` on."""
        row = await self._conn.fetchrow(SUM_COUNTS, account_id, since)
        return Counts(int(row["sent"]), int(row["bounced"]), int(row["complained"]))

    async def prune(self, counts_before: datetime, history_before: datetime) -> None:
        """Forget counts and history past their use."""
        await self._conn.execute(PRUNE_COUNTS, counts_before)
        await self._conn.execute(PRUNE_HISTORY, history_before)

    async def pause(self, account_id: int) -> Pause | None:
        """The brake's pause of the account, if paused."""
        row = await self._conn.fetchrow(SELECT_PAUSE, account_id)
        return Pause(row["paused_at"], row["until"], row["reason"]) if row else None

    async def start_pause(self, account_id: int, pause: Pause) -> None:
        """Record that the brake paused the account."""
        await self._conn.execute(INSERT_PAUSE, account_id, pause.paused_at, pause.until, pause.reason)

    async def end_pause(self, account_id: int) -> None:
        """Record that the brake resumed the account."""
        await self._conn.execute(DELETE_PAUSE, account_id)

    async def forget_pause(self, account_id: int, resumed_at: datetime) -> bool:
        """Forget the brake's pause of an account someone else resumed at `resumed_at`; False if
        there was none (or it came later)."""
        status: str = await self._conn.execute(FORGET_PAUSE, account_id, resumed_at)
        return status != "DELETE 0"

    async def override(self, account_id: int, now: datetime) -> Override | None:
        """The override in force for the account at `now`."""
        row = await self._conn.fetchrow(SELECT_OVERRIDE, account_id, now)
        return _override(row) if row else None

    async def set_override(
        self, account_id: int, until: datetime | None, reason: str, by: str, now: datetime
    ) -> Override:
        """Put a new override in force in place of any other."""
        await self._conn.execute(CLEAR_OVERRIDES, account_id, by, now)
        return _override(await self._conn.fetchrow(INSERT_OVERRIDE, account_id, until, reason, by, now))

    async def clear_override(self, account_id: int, by: str, now: datetime) -> bool:
        """Switch the override off; False if none was in force."""
        status: str = await self._conn.execute(CLEAR_OVERRIDES, account_id, by, now)
        return status != "UPDATE 0"

    async def add_reading(self, account_id: int, reading: Reading) -> None:
        """Keep one poll's rates."""
        await self._conn.execute(
            INSERT_HISTORY,
            account_id,
            reading.polled_at,
            reading.source,
            reading.bounce_rate,
            reading.complaint_rate,
            reading.sent,
            reading.paused,
        )

    async def history(self, account_id: int, since: datetime) -> list[Reading]:
        """The account's polls from `since` on, oldest first."""
        rows = await self._conn.fetch(SELECT_HISTORY, account_id, since)
        return [
            Reading(
                r["polled_at"], r["source"], r["bounce_rate"], r["complaint_rate"], r["sent"], r["paused"]
            )
            for r in rows
        ]

    async def try_lock(self, key: str) -> bool:
        """Take the transaction's advisory lock `key`; False if another replica holds it."""
        locked: bool = await self._conn.fetchval(TRY_LOCK, key)
        return locked
