"""Bounce's SQL on the real PostgreSQL, each test in a rolled-back transaction."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from services.bounce.repository import SentMessageRepository
from tests.bounce.support import sent


class TestRecord:
    async def test_stores_the_message_under_its_provider_id(self, bounce_conn: asyncpg.Connection) -> None:
        event = sent()

        await SentMessageRepository(bounce_conn).record(event)

        count = await bounce_conn.fetchval(
            "SELECT count(*) FROM sent_messages WHERE provider_message_id = $1", event.provider_message_id
        )
        assert count == 1

    async def test_recording_a_known_provider_id_again_changes_nothing(
        self, bounce_conn: asyncpg.Connection
    ) -> None:
        first = sent()
        repository = SentMessageRepository(bounce_conn)
        await repository.record(first)

        await repository.record(first)
        await repository.record(
            sent(
                provider_message_id=first.provider_message_id,
                email="other@example.com",
                sent_at=first.sent_at + timedelta(hours=1),
            )
        )

        rows = await bounce_conn.fetch(
            "SELECT email, sent_at FROM sent_messages WHERE provider_message_id = $1",
            first.provider_message_id,
        )
        assert [(r["email"], r["sent_at"]) for r in rows] == [(first.email, first.sent_at)]


class TestFind:
    async def test_returns_the_recorded_message(self, bounce_conn: asyncpg.Connection) -> None:
        event = sent()
        repository = SentMessageRepository(bounce_conn)
        await repository.record(event)

        row = await repository.find(event.provider_message_id)

        assert row is not None
        assert (row["campaign_id"], row["recipient_id"], row["account_id"], row["email"], row["sent_at"]) == (
            event.campaign_id,
            event.recipient_id,
            event.account_id,
            event.email,
            event.sent_at,
        )

    async def test_an_unknown_provider_id_is_none(self, bounce_conn: asyncpg.Connection) -> None:
        assert await SentMessageRepository(bounce_conn).find(sent().provider_message_id) is None
