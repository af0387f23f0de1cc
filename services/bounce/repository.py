"""All SQL of the bounce service. Repositories use the connection they are given; the caller
owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from pydantic import BaseModel

from shared.contracts import MessageSent
from shared.errors import NotFound

# A redelivered event finds its row and changes nothing.
INSERT_SENT = """
INSERT INTO sent_messages (provider_message_id, campaign_id, recipient_id, account_id, email, sent_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (provider_message_id) DO NOTHING
"""
SELECT_SENT = "SELECT * FROM sent_messages WHERE provider_message_id = $1"

# RETURNING yields nothing for a MessageId seen before: the caller then does nothing more.
INSERT_NOTIFICATION = """
INSERT INTO notifications (message_id, topic_arn, account_id, kind, payload)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (message_id) DO NOTHING
RETURNING message_id
"""
INSERT_FEEDBACK = """
INSERT INTO feedback (message_id, account_id, kind, email, provider_message_id, campaign_id,
                      recipient_id, bounce_type, subtype, diagnostic, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""
# Served by feedback_transient_bounces. Only bounces after the address's last release by an
# admin count: those before it were judged already and the admin overruled them.
COUNT_TRANSIENT_BOUNCES = """
SELECT count(*) FROM feedback
WHERE email = $1 AND kind = 'bounce' AND bounce_type = 'Transient' AND occurred_at > $2
  AND occurred_at > coalesce(
      (SELECT released_at FROM suppression_releases WHERE email = $1), '-infinity'::timestamptz)
"""
# Served by feedback_unmatched.
COUNT_UNMATCHED = """
SELECT account_id, count(*) AS unmatched FROM feedback WHERE campaign_id IS NULL
GROUP BY account_id ORDER BY account_id
"""

# An address already suppressed keeps its first reason; RETURNING says whether this was new.
INSERT_SUPPRESSION = """
INSERT INTO suppressions (email, reason, diagnostic, account_id, campaign_id, suppressed_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (email) DO NOTHING
RETURNING suppression_id
"""
# Keyset paging, newest first: suppression_id only grows, so a page never repeats or skips rows
# whatever is added meanwhile. The filters are optional ($1/$2 NULL).
SELECT_SUPPRESSIONS = """
SELECT * FROM suppressions
WHERE ($1::text IS NULL OR strpos(email, $1) > 0)
  AND ($2::text IS NULL OR reason = $2)
  AND suppression_id < $3
ORDER BY suppression_id DESC
LIMIT $4
"""
# The release is remembered (see COUNT_TRANSIENT_BOUNCES); nothing is remembered when the address
# was not on the list.
DELETE_SUPPRESSION = """
WITH removed AS (DELETE FROM suppressions WHERE email = $1 RETURNING suppression_id, email),
released AS (
    INSERT INTO suppression_releases (email, released_at) SELECT email, now() FROM removed
    ON CONFLICT (email) DO UPDATE SET released_at = EXCLUDED.released_at
)
SELECT suppression_id FROM removed
"""


class SentMessageRepository:
    """Messages the providers accepted, by provider message id."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def record(self, event: MessageSent) -> None:
        """Remember a sent message."""
        await self._conn.execute(
            INSERT_SENT,
            event.provider_message_id,
            event.campaign_id,
            event.recipient_id,
            event.account_id,
            event.email,
            event.sent_at,
        )

    async def find(self, provider_message_id: str) -> asyncpg.Record | None:
        """The sent message with this provider id, if known."""
        return await self._conn.fetchrow(SELECT_SENT, provider_message_id)


@dataclass(frozen=True)
class FeedbackRow:
    """One recipient's feedback, as recorded."""

    message_id: str
    account_id: int
    kind: str
    email: str
    provider_message_id: str
    campaign_id: int | None
    recipient_id: int | None
    bounce_type: str
    subtype: str
    diagnostic: str
    occurred_at: datetime


class FeedbackRepository:
    """Feedback notifications received, and what each said about each recipient."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def record_notification(
        self, message_id: str, topic_arn: str, account_id: int, kind: str, payload: str
    ) -> bool:
        """Remember a notification; False if this MessageId was already received."""
        return (
            await self._conn.fetchval(INSERT_NOTIFICATION, message_id, topic_arn, account_id, kind, payload)
            is not None
        )

    async def record(self, row: FeedbackRow) -> None:
        """Remember what a notification said about one recipient."""
        await self._conn.execute(
            INSERT_FEEDBACK,
            row.message_id,
            row.account_id,
            row.kind,
            row.email,
            row.provider_message_id,
            row.campaign_id,
            row.recipient_id,
            row.bounce_type,
            row.subtype,
            row.diagnostic,
            row.occurred_at,
        )

    async def transient_bounces_since(self, email: str, since: datetime) -> int:
        """How many transient bounces this address had after `since` and its last release by an admin."""
        count: int = await self._conn.fetchval(COUNT_TRANSIENT_BOUNCES, email, since)
        return count

    async def unmatched_by_account(self) -> dict[int, int]:
        """Feedback about messages that are not ours, counted per account."""
        return {row["account_id"]: row["unmatched"] for row in await self._conn.fetch(COUNT_UNMATCHED)}


class Suppression(BaseModel):
    """An address of the shared suppression list (also what the admin API shows)."""

    suppression_id: int
    email: str
    reason: str
    diagnostic: str
    account_id: int | None
    campaign_id: int | None
    suppressed_at: datetime


class SuppressionRepository:
    """The suppression list shared by every account."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(
        self,
        email: str,
        reason: str,
        *,
        diagnostic: str,
        account_id: int | None,
        campaign_id: int | None,
        suppressed_at: datetime,
    ) -> bool:
        """Suppress an address (lower-cased); False if it already was."""
        inserted = await self._conn.fetchval(
            INSERT_SUPPRESSION, email, reason, diagnostic, account_id, campaign_id, suppressed_at
        )
        return inserted is not None

    async def page(
        self, *, email: str | None, reason: str | None, before: int, limit: int
    ) -> list[Suppression]:
        """Entries newest first, with a suppression_id under `before`, optionally filtered."""
        rows = await self._conn.fetch(SELECT_SUPPRESSIONS, email, reason, before, limit)
        return [Suppression.model_validate(dict(row)) for row in rows]

    async def remove(self, email: str) -> None:
        """Take an address off the list; NotFound if it is not on it."""
        if await self._conn.fetchval(DELETE_SUPPRESSION, email) is None:
            raise NotFound("endereço não está na lista de supressão")
