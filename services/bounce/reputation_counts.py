"""What the counted rates count, once per event.

The counts mirror what SES's own reputation counts: every sent message, every complaint, and
only hard (permanent) bounces; a transient bounce (mailbox full, greylisting) or an undetermined
one says nothing about the list's quality, and SES leaves them out of its bounce rate too.

Each event is counted once: its id is recorded in `processed_events` under a key derived from
it, so the counting stays idempotent apart from whatever else the same handler (or another
consumer of the same event in this schema) deduplicates on the plain event id.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid5

import asyncpg

from services.bounce.reputation_repository import MINUTE, ReputationRepository
from services.bounce.settings import BounceSettings
from shared import db
from shared.contracts import MessageBounced, MessageComplained, MessageSent
from shared.settings import ServiceSettings

_NAMESPACE = UUID("6f0c3c1e-4f4e-4d1b-9d7a-2b1d0a5e7c31")


def bucket_of(window: timedelta) -> timedelta:
    """The width of a count bucket: 1/1440 of the window (a minute for a day), at least a second,
    so a shortened window still sees its counts come and go at its own pace."""
    return max(timedelta(seconds=1), window / 1440)


def window_of(settings: ServiceSettings) -> timedelta:
    """The counted rates' window in the bounce service's settings."""
    assert isinstance(settings, BounceSettings)
    return timedelta(hours=settings.REPUTATION_WINDOW_HOURS)


async def _first_count(conn: asyncpg.Connection, event_id: UUID) -> bool:
    return await db.first_processing(conn, uuid5(_NAMESPACE, f"reputation-count:{event_id}"))


async def count_sent(conn: asyncpg.Connection, event: MessageSent, bucket: timedelta = MINUTE) -> None:
    """Count a sent message in its account's bucket."""
    if await _first_count(conn, event.event_id):
        await ReputationRepository(conn).add_counts(event.account_id, event.sent_at, sent=1, bucket=bucket)


async def count_bounced(conn: asyncpg.Connection, event: MessageBounced, bucket: timedelta = MINUTE) -> None:
    """Count a hard bounce in its account's bucket; other bounces are not counted."""
    if event.kind == "permanent" and await _first_count(conn, event.event_id):
        await ReputationRepository(conn).add_counts(
            event.account_id, event.bounced_at, bounced=1, bucket=bucket
        )


async def count_complained(
    conn: asyncpg.Connection, event: MessageComplained, bucket: timedelta = MINUTE
) -> None:
    """Count a complaint in its account's bucket."""
    if await _first_count(conn, event.event_id):
        await ReputationRepository(conn).add_counts(
            event.account_id, event.complained_at, complained=1, bucket=bucket
        )
