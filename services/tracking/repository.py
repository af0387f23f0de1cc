"""All SQL of the tracking service: the unsubscribes it accepted. The caller owns the transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.tracking.unsubscribe import Unsubscribe

# The inserted row, or the one already there: the outer SELECT reads the statement's snapshot,
# so exactly one branch returns a row (none if an identical request committed meanwhile).
RECORD_UNSUBSCRIBE = """
WITH inserted AS (
    INSERT INTO unsubscribes (campaign_id, recipient_id, scope, reason, method, requested_at)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (campaign_id, recipient_id, scope) DO NOTHING
    RETURNING requested_at
)
SELECT requested_at, true AS new FROM inserted
UNION ALL
SELECT requested_at, false AS new FROM unsubscribes
WHERE campaign_id = $1 AND recipient_id = $2 AND scope = $3
"""


class UnsubscribeRepository:
    """Unsubscribes accepted from recipients."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def record(self, unsubscribe: Unsubscribe) -> tuple[datetime, bool]:
        """Keep an unsubscribe; return when it was first asked, and whether this request is the first."""
        row = await self._conn.fetchrow(
            RECORD_UNSUBSCRIBE,
            unsubscribe.campaign_id,
            unsubscribe.recipient_id,
            unsubscribe.scope,
            unsubscribe.reason,
            unsubscribe.method,
            unsubscribe.requested_at,
        )
        if row is None:
            return unsubscribe.requested_at, False
        return row["requested_at"], row["new"]
