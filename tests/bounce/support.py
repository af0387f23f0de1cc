"""What the bounce tests share: the service running in-process, and what its handlers finished."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import FastAPI
from faststream import BaseMiddleware
from faststream.message import StreamMessage

from shared.contracts import MessageSent, topology, utc_now
from shared.service import Runtime
from tests.support import eventually


def unique_id() -> int:
    """An id no other test of this run uses (fits PostgreSQL integer)."""
    return random.randint(10**8, 2**31 - 1)


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
class Handled:
    """Message ids the service's handlers finished with: None for success, else the error."""

    outcomes: dict[str, list[str | None]] = field(default_factory=dict)

    def middleware(self) -> type[BaseMiddleware]:
        """A broker middleware (innermost, so it sees the handler's own error) that records."""
        handled = self

        class Record(BaseMiddleware):
            async def consume_scope(
                self, call_next: Callable[[StreamMessage[Any]], Any], msg: StreamMessage[Any]
            ) -> Any:
                try:
                    result = await call_next(msg)
                except Exception as exc:
                    handled.outcomes.setdefault(msg.message_id, []).append(repr(exc))
                    raise
                handled.outcomes.setdefault(msg.message_id, []).append(None)
                return result

        return Record

    async def wait_for(self, message_id: str, times: int = 1, within: float = 20.0) -> list[str | None]:
        """The outcomes of a message once it was handled `times` times."""

        async def done() -> bool:
            return len(self.outcomes.get(message_id, [])) >= times

        await eventually(done, within)
        return self.outcomes[message_id]


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
        await self.runtime.broker.publish(
            event,
            exchange=topology.EVENTS.name,
            routing_key=event.routing_key,
            message_id=str(event.event_id),
            persist=True,
        )

    async def rows(self, provider_message_id: str) -> list[asyncpg.Record]:
        """The rows of bounce.sent_messages under this provider id."""
        async with self.runtime.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(
                "SELECT * FROM sent_messages WHERE provider_message_id = $1", provider_message_id
            )
        return rows
