"""All SQL of the sender service. Repositories use the connection they are given; the caller
owns the transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

import asyncpg

from shared.contracts import AccountConfigured, CampaignStarted, Recipient
from shared.outbox import OutboxRow

# A late, older event never overwrites a newer configuration; a redelivered one is applied again.
UPSERT_ACCOUNT = """
INSERT INTO accounts (account_id, config, configured_at) VALUES ($1, $2, $3)
ON CONFLICT (account_id) DO UPDATE SET config = excluded.config, configured_at = excluded.configured_at
WHERE accounts.configured_at IS NULL OR accounts.configured_at <= excluded.configured_at
RETURNING account_id
"""
SELECT_ACCOUNTS = "SELECT config, paused FROM accounts WHERE config IS NOT NULL ORDER BY account_id"
# Pause and resume may arrive before the account's configuration: the row keeps the pause and
# the configuration, when it comes, finds the account paused. (`paused_until` is shown, not
# acted on: resuming after a bounce pause is bounce's decision, announced by account.resumed.)
SET_ACCOUNT_PAUSE = """
INSERT INTO accounts (account_id, paused, pause_reason, paused_until, state_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (account_id) DO UPDATE
SET paused = excluded.paused, pause_reason = excluded.pause_reason,
    paused_until = excluded.paused_until, state_at = excluded.state_at
WHERE accounts.state_at IS NULL OR accounts.state_at <= excluded.state_at
RETURNING paused
"""
SELECT_ACCOUNT_PAUSED = "SELECT paused FROM accounts WHERE account_id = $1"
SELECT_ACCOUNT = "SELECT config, paused FROM accounts WHERE account_id = $1"
UPSERT_CAMPAIGN = """
INSERT INTO campaigns (campaign_id, content) VALUES ($1, $2)
ON CONFLICT (campaign_id) DO UPDATE SET content = excluded.content
"""
CANCEL_CAMPAIGN = """
INSERT INTO campaigns (campaign_id, cancelled) VALUES ($1, true)
ON CONFLICT (campaign_id) DO UPDATE SET cancelled = true
"""
SELECT_CAMPAIGN = "SELECT content, cancelled, paused FROM campaigns WHERE campaign_id = $1"
SET_CAMPAIGN_PAUSE = """
INSERT INTO campaigns (campaign_id, paused, state_at) VALUES ($1, $2, $3)
ON CONFLICT (campaign_id) DO UPDATE SET paused = excluded.paused, state_at = excluded.state_at
WHERE campaigns.state_at IS NULL OR campaigns.state_at <= excluded.state_at
"""
# Held under the row lock, so a batch is never parked after the resume that would release it.
LOCK_CAMPAIGN_STATE = "SELECT paused, cancelled FROM campaigns WHERE campaign_id = $1 FOR UPDATE"
SELECT_HALTED_CAMPAIGNS = "SELECT campaign_id, paused, cancelled FROM campaigns WHERE paused OR cancelled"
PARK_BATCH = """
INSERT INTO parked_batches (batch_id, campaign_id, account_id, priority, body)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (batch_id) DO NOTHING
"""
SELECT_PARKED = """
SELECT batch_id, account_id, priority, body FROM parked_batches WHERE campaign_id = $1
ORDER BY parked_at FOR UPDATE
"""
DELETE_PARKED = "DELETE FROM parked_batches WHERE batch_id = ANY($1::uuid[])"
# The claim: only the first attempt of a (campaign, recipient) inserts; RETURNING tells which.
# Several claims in one statement. The outer SELECT reads the table as it was before the
# INSERT (one snapshot): a recipient claimed now shows no row there, one claimed before shows
# its status and claimer.
CLAIM_MANY = """
WITH wanted AS (
    SELECT * FROM unnest($4::int[], $5::text[]) AS w(recipient_id, email)
), claimed AS (
    INSERT INTO deliveries (campaign_id, recipient_id, email, account_id, claimed_by, status)
    SELECT $1, recipient_id, email, $2, $3, 'sending' FROM wanted
    ON CONFLICT (campaign_id, recipient_id) DO NOTHING
    RETURNING recipient_id
)
SELECT w.recipient_id, c.recipient_id IS NOT NULL AS won, d.status, d.claimed_by
FROM wanted w
LEFT JOIN claimed c USING (recipient_id)
LEFT JOIN deliveries d ON d.campaign_id = $1 AND d.recipient_id = w.recipient_id
"""
# Every ledger write of a moment in one statement (so one round trip and one commit): outcomes
# of sends that ended, with their events for the outbox, and claims of the sends about to start.
# An outcome completes only a delivery still `sending` (another process may have judged it
# indeterminate meanwhile) and only a completed one queues its event. The claims read the table
# as it was before the statement, as in CLAIM_MANY; a delivery is never finished and claimed in
# the same write (its claim was committed before its send began).
RECORD = """
WITH outcome AS (
    SELECT * FROM unnest($2::int[], $3::int[], $4::text[], $5::text[], $6::text[])
        AS o(campaign_id, recipient_id, status, provider_message_id, reason)
), finished AS (
    UPDATE deliveries d
    SET status = o.status, provider_message_id = o.provider_message_id, reason = o.reason,
        finished_at = now()
    FROM outcome o
    WHERE d.campaign_id = o.campaign_id AND d.recipient_id = o.recipient_id AND d.status = 'sending'
    RETURNING d.campaign_id, d.recipient_id
), announced AS (
    INSERT INTO outbox (exchange, routing_key, body, headers, message_id)
    SELECT e.exchange, e.routing_key, e.body, e.headers::jsonb, e.message_id
    FROM unnest($2::int[], $3::int[], $7::text[], $8::text[], $9::bytea[], $10::text[], $11::text[])
        WITH ORDINALITY AS e(campaign_id, recipient_id, exchange, routing_key, body, headers, message_id, n)
    JOIN finished f USING (campaign_id, recipient_id)
    ORDER BY e.n
), wanted AS (
    SELECT * FROM unnest($12::int[], $13::int[], $14::int[], $15::text[])
        AS w(campaign_id, account_id, recipient_id, email)
), claimed AS (
    INSERT INTO deliveries (campaign_id, recipient_id, email, account_id, claimed_by, status)
    SELECT campaign_id, recipient_id, email, account_id, $1, 'sending' FROM wanted
    ON CONFLICT (campaign_id, recipient_id) DO NOTHING
    RETURNING campaign_id, recipient_id
)
SELECT true AS finish, campaign_id, recipient_id, true AS won, NULL::text AS status,
       NULL::text AS claimed_by
FROM finished
UNION ALL
SELECT false, w.campaign_id, w.recipient_id, c.recipient_id IS NOT NULL, d.status, d.claimed_by
FROM wanted w
LEFT JOIN claimed c USING (campaign_id, recipient_id)
LEFT JOIN deliveries d ON d.campaign_id = w.campaign_id AND d.recipient_id = w.recipient_id
"""
# What a batch needs to know before it sends, in one round trip: its campaign's state (one row
# of kind 'campaign', none if unknown), which of its addresses are blocked (as SELECT_BLOCKED)
# and which of its recipients have a delivery row already (as SELECT_SEEN).
SELECT_BATCH_STATE = """
SELECT 'campaign' AS kind, NULL::int AS recipient_id, NULL::text AS email, NULL::text AS reason,
       content, cancelled, paused
FROM campaigns WHERE campaign_id = $1
UNION ALL
SELECT 'blocked', NULL, email, 'suppressed: ' || reason, NULL, NULL, NULL FROM suppressed_addresses
WHERE email = ANY($3::text[]) AND suppressed
UNION ALL
SELECT 'blocked', NULL, email, 'unsubscribed from every campaign', NULL, NULL, NULL
FROM unsubscribed_addresses WHERE email = ANY($3::text[])
UNION ALL
SELECT 'seen', recipient_id, NULL, NULL, NULL, NULL, NULL FROM deliveries
WHERE campaign_id = $1 AND recipient_id = ANY($2::int[])
"""
SELECT_SEEN = "SELECT recipient_id FROM deliveries WHERE campaign_id = $1 AND recipient_id = ANY($2::int[])"
# A claim left by a process that is gone: the resend setting takes it over for this process.
# A claim written before `claimed_by` existed has none (NULL): IS NOT DISTINCT FROM matches it.
TAKE_OVER = """
UPDATE deliveries SET claimed_by = $4, started_at = now()
WHERE campaign_id = $1 AND recipient_id = $2 AND status = 'sending' AND claimed_by IS NOT DISTINCT FROM $3
RETURNING status
"""
FINISH_MANY = """
UPDATE deliveries d
SET status = o.status, provider_message_id = o.provider_message_id, reason = o.reason, finished_at = now()
FROM unnest($2::int[], $3::text[], $4::text[], $5::text[])
     AS o(recipient_id, status, provider_message_id, reason)
WHERE d.campaign_id = $1 AND d.recipient_id = o.recipient_id AND d.status = 'sending'
RETURNING d.recipient_id
"""
SENT_PER_MINUTE = """
SELECT date_trunc('minute', finished_at) AS minute, count(*)::int AS sent FROM deliveries
WHERE account_id = $1 AND status = 'sent' AND finished_at > now() - interval '24 hours'
GROUP BY 1 ORDER BY 1
"""
SELECT_BLOCKED = """
SELECT email, 'suppressed: ' || reason AS reason FROM suppressed_addresses
WHERE email = ANY($1::text[]) AND suppressed
UNION ALL
SELECT email, 'unsubscribed from every campaign' FROM unsubscribed_addresses WHERE email = ANY($1::text[])
"""
UPSERT_SUPPRESSED = """
INSERT INTO suppressed_addresses (email, suppressed, reason, changed_at) VALUES (lower($1), $2, $3, $4)
ON CONFLICT (email) DO UPDATE
SET suppressed = excluded.suppressed, reason = excluded.reason, changed_at = excluded.changed_at
WHERE suppressed_addresses.changed_at <= excluded.changed_at
"""
UPSERT_UNSUBSCRIBED = """
INSERT INTO unsubscribed_addresses (email, changed_at) VALUES (lower($1), $2)
ON CONFLICT (email) DO NOTHING
"""
# A transient failure gives the claim back, so the retried batch sends this recipient.
RELEASE = "DELETE FROM deliveries WHERE campaign_id = $1 AND recipient_id = $2 AND status = 'sending'"


class AccountRepository:
    """Sender's copy of the sending accounts."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def save(self, event: AccountConfigured) -> bool:
        """Keep the configuration unless a newer one is stored; True if it is the current one."""
        saved = await self._conn.fetchval(
            UPSERT_ACCOUNT, event.account_id, event.model_dump(mode="json"), event.occurred_at
        )
        return saved is not None

    async def all(self) -> list[tuple[AccountConfigured, bool]]:
        """The latest configuration of every known account, and whether it is paused."""
        return [
            (AccountConfigured.model_validate(r["config"]), bool(r["paused"]))
            for r in await self._conn.fetch(SELECT_ACCOUNTS)
        ]

    async def set_paused(
        self, account_id: int, paused: bool, reason: str | None, until: datetime | None, at: datetime
    ) -> bool | None:
        """Record a pause or resume unless a newer one is stored (even before the account's
        configuration); the pause state it set, or None if the event was older."""
        result: bool | None = await self._conn.fetchval(
            SET_ACCOUNT_PAUSE, account_id, paused, reason, until, at
        )
        return result

    async def get(self, account_id: int) -> tuple[AccountConfigured | None, bool]:
        """The account's latest configuration (None if not received yet) and whether it is paused."""
        row = await self._conn.fetchrow(SELECT_ACCOUNT, account_id)
        if row is None:
            return None, False
        config = None if row["config"] is None else AccountConfigured.model_validate(row["config"])
        return config, bool(row["paused"])

    async def is_paused(self, account_id: int) -> bool:
        """Whether the account is paused (False if unknown)."""
        return bool(await self._conn.fetchval(SELECT_ACCOUNT_PAUSED, account_id))

    async def sent_per_minute(self, account_id: int) -> list[tuple[datetime, int]]:
        """The account's sends of the last 24 hours, counted by minute (its quota window)."""
        return [(r["minute"], r["sent"]) for r in await self._conn.fetch(SENT_PER_MINUTE, account_id)]


class CampaignRepository:
    """Sender's copy of started campaigns."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def save(self, content: CampaignStarted) -> None:
        """Keep a started campaign's content."""
        await self._conn.execute(UPSERT_CAMPAIGN, content.campaign_id, content.model_dump(mode="json"))

    async def cancel(self, campaign_id: int) -> None:
        """Remember that the campaign was cancelled (even before its content arrives)."""
        await self._conn.execute(CANCEL_CAMPAIGN, campaign_id)

    async def get(self, campaign_id: int) -> CampaignState:
        """The campaign's content (None if not received yet) and whether it is cancelled or paused."""
        row = await self._conn.fetchrow(SELECT_CAMPAIGN, campaign_id)
        if row is None:
            return CampaignState(None, cancelled=False, paused=False)
        content = None if row["content"] is None else CampaignStarted.model_validate(row["content"])
        return CampaignState(content, cancelled=bool(row["cancelled"]), paused=bool(row["paused"]))

    async def set_paused(self, campaign_id: int, paused: bool, at: datetime) -> None:
        """Record a pause or resume unless a newer one is stored."""
        await self._conn.execute(SET_CAMPAIGN_PAUSE, campaign_id, paused, at)

    async def lock_state(self, campaign_id: int) -> CampaignState:
        """The campaign's pause and cancel state, its row locked until the transaction ends."""
        row = await self._conn.fetchrow(LOCK_CAMPAIGN_STATE, campaign_id)
        if row is None:
            return CampaignState(None, cancelled=False, paused=False)
        return CampaignState(None, cancelled=bool(row["cancelled"]), paused=bool(row["paused"]))

    async def halted(self) -> list[CampaignState]:
        """Every campaign paused or cancelled (content not loaded)."""
        return [
            CampaignState(None, cancelled=r["cancelled"], paused=r["paused"], campaign_id=r["campaign_id"])
            for r in await self._conn.fetch(SELECT_HALTED_CAMPAIGNS)
        ]

    async def park(
        self, batch_id: UUID, campaign_id: int, account_id: int, priority: int, body: bytes
    ) -> None:
        """Set a paused campaign's batch aside until the campaign is resumed."""
        await self._conn.execute(PARK_BATCH, batch_id, campaign_id, account_id, priority, body)

    async def parked(self, campaign_id: int) -> list[ParkedBatch]:
        """The batches set aside for the campaign, oldest first, locked until the transaction ends."""
        return [
            ParkedBatch(r["batch_id"], r["account_id"], r["priority"], bytes(r["body"]))
            for r in await self._conn.fetch(SELECT_PARKED, campaign_id)
        ]

    async def unpark(self, batch_ids: list[UUID]) -> None:
        """Forget batches published again."""
        await self._conn.execute(DELETE_PARKED, batch_ids)


async def batch_state(conn: asyncpg.Connection, campaign_id: int, recipients: list[Recipient]) -> BatchState:
    """The campaign's state, the blocked addresses and the recipients seen before, of a batch
    (each as `CampaignRepository.get`, `AddressRepository.blocked`, `DeliveryRepository.seen`)."""
    rows = await conn.fetch(
        SELECT_BATCH_STATE,
        campaign_id,
        [r.recipient_id for r in recipients],
        [r.email.lower() for r in recipients],
    )
    state = CampaignState(None, cancelled=False, paused=False)
    blocked: dict[str, str] = {}
    seen: set[int] = set()
    for r in rows:
        if r["kind"] == "campaign":
            content = None if r["content"] is None else CampaignStarted.model_validate(r["content"])
            state = CampaignState(content, cancelled=bool(r["cancelled"]), paused=bool(r["paused"]))
        elif r["kind"] == "blocked":
            blocked[r["email"]] = r["reason"]
        else:
            seen.add(r["recipient_id"])
    return BatchState(state, blocked, seen)


@dataclass(frozen=True)
class BatchState:
    """What a batch needs to know before it sends (see `batch_state`)."""

    campaign: CampaignState
    blocked: dict[str, str]
    seen: set[int]


@dataclass(frozen=True)
class CampaignState:
    """What the sender knows of a campaign."""

    content: CampaignStarted | None
    cancelled: bool
    paused: bool
    campaign_id: int | None = None


@dataclass(frozen=True)
class ParkedBatch:
    """A SendBatch of a paused campaign, as it was received."""

    batch_id: UUID
    account_id: int
    priority: int
    body: bytes


class AddressRepository:
    """Sender's copies of the suppression list and of the global unsubscribes."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def suppress(self, email: str, reason: str, at: datetime) -> None:
        """No account sends to this address any more."""
        await self._conn.execute(UPSERT_SUPPRESSED, email, True, reason, at)

    async def unsuppress(self, email: str, at: datetime) -> None:
        """An admin lifted the suppression (unless a newer one is stored)."""
        await self._conn.execute(UPSERT_SUPPRESSED, email, False, "lifted", at)

    async def unsubscribe(self, email: str, at: datetime) -> None:
        """The address left every future campaign."""
        await self._conn.execute(UPSERT_UNSUBSCRIBED, email, at)

    async def blocked(self, recipients: list[Recipient]) -> dict[str, str]:
        """Of these recipients, the lower-cased addresses that must be skipped, with the reason."""
        rows = await self._conn.fetch(SELECT_BLOCKED, [r.email.lower() for r in recipients])
        return {r["email"]: r["reason"] for r in rows}


class DeliveryRepository:
    """The delivery ledger: one row per (campaign, recipient)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def claim(
        self, campaign_id: int, recipient_id: int, email: str, account_id: int, claimer: str
    ) -> Claim:
        """Record that `claimer` is sending to this recipient, or say who did before."""
        claims = await self.claim_many(
            campaign_id, account_id, claimer, [Recipient(recipient_id=recipient_id, email=email)]
        )
        return claims[recipient_id]

    async def claim_many(
        self, campaign_id: int, account_id: int, claimer: str, recipients: list[Recipient]
    ) -> dict[int, Claim]:
        """Claim these recipients for `claimer` at once; for each, the claim or who had it."""
        rows = await self._conn.fetch(
            CLAIM_MANY,
            campaign_id,
            account_id,
            claimer,
            [r.recipient_id for r in recipients],
            [r.email for r in recipients],
        )
        return {
            r["recipient_id"]: Claim(True, "sending", claimer)
            if r["won"]
            else Claim(False, r["status"], r["claimed_by"])
            for r in rows
        }

    async def record(self, claimer: str, claims: list[ClaimRequest], outcomes: list[OutcomeRow]) -> Recorded:
        """Complete deliveries with their outcomes (queueing their events) and claim others for
        `claimer`, in one statement; which outcomes completed a claim, and each claim's result."""
        headers = [json.dumps(o.event[3]) for o in outcomes]
        rows = await self._conn.fetch(
            RECORD,
            claimer,
            [o.campaign_id for o in outcomes],
            [o.recipient_id for o in outcomes],
            [o.status for o in outcomes],
            [o.provider_message_id for o in outcomes],
            [o.reason for o in outcomes],
            [o.event[0] for o in outcomes],
            [o.event[1] for o in outcomes],
            [o.event[2] for o in outcomes],
            headers,
            [o.event[4] for o in outcomes],
            [c.campaign_id for c in claims],
            [c.account_id for c in claims],
            [c.recipient_id for c in claims],
            [c.email for c in claims],
        )
        recorded = Recorded(set(), {})
        for r in rows:
            key = (r["campaign_id"], r["recipient_id"])
            if r["finish"]:
                recorded.finished.add(key)
            else:
                recorded.claims[key] = (
                    Claim(True, "sending", claimer)
                    if r["won"]
                    else Claim(False, r["status"], r["claimed_by"])
                )
        return recorded

    async def seen(self, campaign_id: int, recipient_ids: list[int]) -> set[int]:
        """Of these recipients, those that have a delivery row (claimed before)."""
        return {r["recipient_id"] for r in await self._conn.fetch(SELECT_SEEN, campaign_id, recipient_ids)}

    async def take_over(
        self, campaign_id: int, recipient_id: int, previous: str | None, claimer: str
    ) -> bool:
        """Take over a claim left by a process that is gone; False if someone else did."""
        return await self._conn.fetchval(TAKE_OVER, campaign_id, recipient_id, previous, claimer) is not None

    async def finish(
        self,
        campaign_id: int,
        recipient_id: int,
        status: str,
        provider_message_id: str | None,
        reason: str | None,
    ) -> bool:
        """Complete a claimed delivery with its outcome; False if it is no longer in flight (another
        process judged it indeterminate meanwhile)."""
        return recipient_id in await self.finish_many(
            campaign_id, [(recipient_id, status, provider_message_id, reason)]
        )

    async def finish_many(
        self, campaign_id: int, outcomes: list[tuple[int, str, str | None, str | None]]
    ) -> set[int]:
        """Complete claimed deliveries, each (recipient_id, status, provider_message_id, reason);
        the recipients completed (the others were no longer in flight)."""
        rows = await self._conn.fetch(
            FINISH_MANY,
            campaign_id,
            [o[0] for o in outcomes],
            [o[1] for o in outcomes],
            [o[2] for o in outcomes],
            [o[3] for o in outcomes],
        )
        return {r["recipient_id"] for r in rows}

    async def release(self, campaign_id: int, recipient_id: int) -> None:
        """Give back a claim whose send did not happen, so a retry sends it."""
        await self._conn.execute(RELEASE, campaign_id, recipient_id)


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a delivery: `won` if this process may send it now; otherwise the
    delivery's status and the process that claimed it."""

    won: bool
    status: str
    claimed_by: str | None


class ClaimRequest(NamedTuple):
    """A delivery to claim: the account sends to this recipient of the campaign now."""

    campaign_id: int
    account_id: int
    recipient_id: int
    email: str


class OutcomeRow(NamedTuple):
    """A delivery's outcome and the outbox row of the event that announces it."""

    campaign_id: int
    recipient_id: int
    status: str
    provider_message_id: str | None
    reason: str | None
    event: OutboxRow


@dataclass(frozen=True)
class Recorded:
    """What `record` did: the (campaign, recipient) whose outcome completed their claim, and the
    result of each claim by (campaign, recipient)."""

    finished: set[tuple[int, int]]
    claims: dict[tuple[int, int], Claim]
