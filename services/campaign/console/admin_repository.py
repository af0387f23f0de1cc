"""SQL of the console's administration screens: unsubscribes (read from the results), sending
accounts and sender addresses as the console edits and removes them, and each account's usage
(sent in the last 24 hours, the campaign sending and the queue behind it). Kept apart from the
service's repository.py like the console's own repository; the same rules hold (the caller owns
the transaction, rows come back as models)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
from pydantic import BaseModel

from services.campaign.models import SenderAddress

# Every unsubscribe recorded on a result, newest first: a recipient who left this campaign and
# later every campaign shows once, dated by the later request. The filter matches name, e-mail,
# reason or campaign name; served by results_unsubscribed_at.
SELECT_UNSUBSCRIBES = """
SELECT coalesce(r.unsubscribed_all_at, r.unsubscribed_campaign_at) AS unsubscribed_at,
       r.name, r.email, coalesce(r.unsubscribe_reason, '') AS reason,
       CASE WHEN r.unsubscribed_all_at IS NOT NULL THEN 'all' ELSE 'campaign' END AS scope,
       r.campaign_id, c.name AS campaign_name, r.recipient_id
FROM results r JOIN campaigns c USING (campaign_id)
WHERE (r.unsubscribed_campaign_at IS NOT NULL OR r.unsubscribed_all_at IS NOT NULL)
  AND ($1::text IS NULL OR r.email ILIKE $1 OR r.name ILIKE $1 OR r.unsubscribe_reason ILIKE $1
       OR c.name ILIKE $1)
  AND ($2::text IS NULL OR ($2 = 'all') = (r.unsubscribed_all_at IS NOT NULL))
ORDER BY coalesce(r.unsubscribed_all_at, r.unsubscribed_campaign_at) DESC, r.campaign_id DESC,
         r.recipient_id DESC
LIMIT $3 OFFSET $4
"""

# Sender addresses with whether a campaign uses them (such an address cannot be removed: its
# campaigns' results name it).
SELECT_SENDERS_IN_USE = """
SELECT DISTINCT sender_address_id FROM campaigns WHERE sender_address_id = ANY($1::int[])
"""
UPDATE_SENDER_ADDRESS = """
UPDATE sender_addresses SET name = $2, email = $3, reply_to = $4 WHERE sender_address_id = $1
RETURNING *
"""
SENDER_EMAIL_TAKEN_BY_OTHER = """
SELECT EXISTS (SELECT 1 FROM sender_addresses WHERE lower(email) = lower($1) AND sender_address_id <> $2)
"""
DELETE_SENDER_ADDRESS = "DELETE FROM sender_addresses WHERE sender_address_id = $1"
ACCOUNT_HAS_CAMPAIGNS = """
SELECT EXISTS (SELECT 1 FROM campaigns c JOIN sender_addresses s USING (sender_address_id)
               WHERE s.account_id = $1)
"""
# The account's addresses go with it (none of them has a campaign, checked first); user links
# to them cascade.
DELETE_ACCOUNT_SENDERS = "DELETE FROM sender_addresses WHERE account_id = $1"
DELETE_ACCOUNT = "DELETE FROM accounts WHERE account_id = $1"

# Messages sent per account since $1 (the last 24 hours), from the per-recipient results:
# results_sent_at gives the range, campaigns and sender addresses (small) give the account.
SENT_SINCE = """
SELECT s.account_id, count(*) AS sent
FROM results r
JOIN campaigns c USING (campaign_id)
JOIN sender_addresses s USING (sender_address_id)
WHERE r.status = 'sent' AND r.sent_at >= $1
GROUP BY s.account_id
"""
# Unfinished campaigns per account in the order they go out: the one sending first, then by
# priority (higher first), then by start. A paused one keeps its place.
SELECT_QUEUES = """
SELECT s.account_id, c.campaign_id, c.name, c.status, c.priority, c.recipients,
       c.sent + c.failed + c.skipped + c.indeterminate AS done, c.started_at
FROM campaigns c JOIN sender_addresses s USING (sender_address_id)
WHERE c.status IN ('queued', 'sending', 'paused')
ORDER BY s.account_id, (c.status = 'sending') DESC, c.priority DESC, c.started_at, c.campaign_id
"""


class Unsubscribe(BaseModel):
    """A recipient who left a campaign or every future one ("Subscrições canceladas")."""

    unsubscribed_at: datetime
    name: str
    email: str
    reason: str
    scope: Literal["campaign", "all"]
    campaign_id: int
    campaign_name: str
    recipient_id: int


class QueuedCampaign(BaseModel):
    """An unfinished campaign of an account, in sending order."""

    account_id: int
    campaign_id: int
    name: str
    status: str
    priority: int
    recipients: int | None
    done: int
    started_at: datetime | None


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class UnsubscribeRepository:
    """Unsubscribes as the results recorded them."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def page(self, search: str | None, scope: str | None, limit: int, offset: int) -> list[Unsubscribe]:
        """Unsubscribes matching `search` (and `scope`: "campaign" or "all"), newest first."""
        rows = await self._conn.fetch(
            SELECT_UNSUBSCRIBES, _like(search) if search else None, scope, limit, offset
        )
        return [Unsubscribe.model_validate(dict(r)) for r in rows]


class SenderAdminRepository:
    """Edits and removals of sender addresses and accounts by the console."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def in_use(self, sender_address_ids: list[int]) -> set[int]:
        """Which of these sender addresses a campaign uses."""
        rows = await self._conn.fetch(SELECT_SENDERS_IN_USE, sender_address_ids)
        return {r["sender_address_id"] for r in rows}

    async def email_taken(self, email: str, other_than: int) -> bool:
        """Whether another sender address uses this e-mail."""
        return bool(await self._conn.fetchval(SENDER_EMAIL_TAKEN_BY_OTHER, email, other_than))

    async def update(
        self, sender_address_id: int, name: str, email: str, reply_to: str | None
    ) -> SenderAddress:
        """Change a sender address's name, e-mail and reply-to."""
        row = await self._conn.fetchrow(UPDATE_SENDER_ADDRESS, sender_address_id, name, email, reply_to)
        return SenderAddress.model_validate(dict(row))

    async def delete(self, sender_address_id: int) -> None:
        """Remove a sender address no campaign uses."""
        await self._conn.execute(DELETE_SENDER_ADDRESS, sender_address_id)

    async def account_has_campaigns(self, account_id: int) -> bool:
        """Whether a campaign was ever made with one of the account's addresses."""
        return bool(await self._conn.fetchval(ACCOUNT_HAS_CAMPAIGNS, account_id))

    async def delete_account(self, account_id: int) -> None:
        """Remove an account without campaigns, with its sender addresses."""
        await self._conn.execute(DELETE_ACCOUNT_SENDERS, account_id)
        await self._conn.execute(DELETE_ACCOUNT, account_id)


class UsageRepository:
    """What each account sent and has queued."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def sent_since(self, since: datetime) -> dict[int, int]:
        """Messages sent per account id since `since`."""
        return {r["account_id"]: int(r["sent"]) for r in await self._conn.fetch(SENT_SINCE, since)}

    async def queues(self) -> dict[int, list[QueuedCampaign]]:
        """Unfinished campaigns per account id, in sending order."""
        queues: dict[int, list[QueuedCampaign]] = {}
        for row in await self._conn.fetch(SELECT_QUEUES):
            campaign = QueuedCampaign.model_validate(dict(row))
            queues.setdefault(campaign.account_id, []).append(campaign)
        return queues
