"""What the counted rates count, once per event.

The counts mirror what SES's own reputation counts: every sent message, every complaint, and
only hard (permanent) bounces; a transient bounce (mailbox full, greylisting) or an undetermined
one says nothing about the list's quality, and SES leaves them out of its bounce rate too.

Each event is counted once: its id is recorded in `processed_events` under a key derived from
it, so the counting stays idempotent apart from whatever else the same handler (or another
consumer of the same event in this schema) deduplicates on the plain event id.
"""

from __future__ import annotations

from uuid import UUID, uuid5

import asyncpg

from services.bounce.reputation_repository import ReputationRepository
from shared import db
from shared.contracts import MessageBounced, MessageComplained, MessageSent

_NAMESPACE = UUID("6f0c3c1e-4f4e-4d1b-9d7a-2b1d0a5e7c31")


async def _first_count(conn: asyncpg.Connection, event_id: UUID) -> bool:
    return await db.first_processing(conn, uuid5(_NAMESPACE, f"reputation-count:{event_id}"))


async def count_sent(conn: asyncpg.Connection, event: MessageSent) -> None:
    """Count a sent message in its account's minute."""
    if await _first_count(conn, event.event_id):
        await ReputationRepository(conn).add_counts(event.account_id, event.sent_at, sent=1)


async def count_bounced(conn: asyncpg.Connection, event: MessageBounced) -> None:
    """Count a hard bounce in its account's minute; other bounces are not counted."""
    if event.kind == "permanent" and await _first_count(conn, event.event_id):
        await ReputationRepository(conn).add_counts(event.account_id, event.bounced_at, bounced=1)


async def count_complained(conn: asyncpg.Connection, event: MessageComplained) -> None:
    """Count a complaint in its account's minute."""
    if await _first_count(conn, event.event_id):
        await ReputationRepository(conn).add_counts(event.account_id, event.complained_at, complained=1)
