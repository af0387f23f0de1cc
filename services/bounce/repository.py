"""All SQL of the bounce service. Repositories use the connection they are given; the caller
owns the transaction."""

from __future__ import annotations

import asyncpg

from shared.contracts import MessageSent

# A redelivered event finds its row and changes nothing.
INSERT_SENT = """
INSERT INTO sent_messages (provider_message_id, campaign_id, recipient_id, account_id, email, sent_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (provider_message_id) DO NOTHING
"""
SELECT_SENT = "SELECT * FROM sent_messages WHERE provider_message_id = $1"


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
