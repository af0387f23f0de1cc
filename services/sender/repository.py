"""All SQL of the sender service. Repositories use the connection they are given; the caller
owns the transaction."""

from __future__ import annotations

import asyncpg

from shared.contracts import AccountConfigured, CampaignStarted

# A late, older event never overwrites a newer configuration; a redelivered one is applied again.
UPSERT_ACCOUNT = """
INSERT INTO accounts (account_id, config, configured_at) VALUES ($1, $2, $3)
ON CONFLICT (account_id) DO UPDATE SET config = excluded.config, configured_at = excluded.configured_at
WHERE accounts.configured_at <= excluded.configured_at
RETURNING account_id
"""
SELECT_ACCOUNTS = "SELECT config FROM accounts ORDER BY account_id"
UPSERT_CAMPAIGN = """
INSERT INTO campaigns (campaign_id, content) VALUES ($1, $2)
ON CONFLICT (campaign_id) DO UPDATE SET content = excluded.content
"""
CANCEL_CAMPAIGN = """
INSERT INTO campaigns (campaign_id, cancelled) VALUES ($1, true)
ON CONFLICT (campaign_id) DO UPDATE SET cancelled = true
"""
SELECT_CAMPAIGN = "SELECT content, cancelled FROM campaigns WHERE campaign_id = $1"
# The claim: only the first attempt of a (campaign, recipient) inserts; RETURNING tells which.
CLAIM = """
INSERT INTO deliveries (campaign_id, recipient_id, email, status) VALUES ($1, $2, $3, 'sending')
ON CONFLICT (campaign_id, recipient_id) DO NOTHING
RETURNING status
"""
FINISH = """
UPDATE deliveries SET status = $3, provider_message_id = $4, reason = $5, finished_at = now()
WHERE campaign_id = $1 AND recipient_id = $2 AND status = 'sending'
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

    async def all(self) -> list[AccountConfigured]:
        """The latest configuration of every known account."""
        return [
            AccountConfigured.model_validate(r["config"]) for r in await self._conn.fetch(SELECT_ACCOUNTS)
        ]


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

    async def get(self, campaign_id: int) -> tuple[CampaignStarted | None, bool]:
        """The campaign's content (None if not received yet) and whether it is cancelled."""
        row = await self._conn.fetchrow(SELECT_CAMPAIGN, campaign_id)
        if row is None:
            return None, False
        content = None if row["content"] is None else CampaignStarted.model_validate(row["content"])
        return content, bool(row["cancelled"])


class DeliveryRepository:
    """The delivery ledger: one row per (campaign, recipient)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def claim(self, campaign_id: int, recipient_id: int, email: str) -> bool:
        """Record that this recipient is being sent to; False if it was claimed before."""
        return await self._conn.fetchval(CLAIM, campaign_id, recipient_id, email) is not None

    async def finish(
        self,
        campaign_id: int,
        recipient_id: int,
        status: str,
        provider_message_id: str | None,
        reason: str | None,
    ) -> None:
        """Complete a claimed delivery with its outcome."""
        await self._conn.execute(FINISH, campaign_id, recipient_id, status, provider_message_id, reason)

    async def release(self, campaign_id: int, recipient_id: int) -> None:
        """Give back a claim whose send did not happen, so a retry sends it."""
        await self._conn.execute(RELEASE, campaign_id, recipient_id)
