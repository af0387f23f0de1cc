"""What the bounce tests share: the service running in-process, and what its handlers finished."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import FastAPI

from shared.broker import publish_event
from shared.contracts import MessageSent, utc_now
from shared.service import Runtime
from tests.support import Handled, unique_id


def sent(**overrides: Any) -> MessageSent:
    """A MessageSent with a provider message id of its own."""
    values: dict[str, Any] = {
        "campaign_id": unique_id(),
        "account_id": unique_id(),
        "recipient_id": 3,
        "email": "Ana@example.com",
        "name": "Ana",
        "provider_message_id": f"<{random.getrandbits(64):x}@email.amazonses.com>",
        "sent_at": utc_now(),
    }
    return MessageSent(**(values | overrides))


@dataclass
class Bounce:
    """The bounce service running in-process."""

    app: FastAPI
    handled: Handled

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def publish(self, event: MessageSent) -> None:
        """Publish the event to the events exchange as the sender's outbox does."""
        await publish_event(self.runtime.broker, event)

    async def rows(self, provider_message_id: str) -> list[asyncpg.Record]:
        """The rows of bounce.sent_messages under this provider id."""
        async with self.runtime.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(
                "SELECT * FROM sent_messages WHERE provider_message_id = $1", provider_message_id
            )
        return rows
