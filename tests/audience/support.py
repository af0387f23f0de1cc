"""What the audience tests share: the service running in-process, and ears on RabbitMQ."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import httpx
from fastapi import FastAPI

from services.audience.dispatcher import Dispatcher
from services.audience.repository import Counts, ResolutionRepository
from shared.contracts import CampaignStarted, SenderIdentity, topology
from shared.service import Runtime
from tests.support import Handled, eventually, unique_id

BATCH_SIZE = 2
MAX_MEMBERS = 5
CSV_MAX_BYTES = 2_000_000
# The remote-group server runs on loopback, which only an allow-list lets through; failures
# are retried once, quickly.
REMOTE_SETTINGS: dict[str, Any] = {
    "REMOTE_ALLOWED_NETWORKS": ["127.0.0.0/8"],
    "REMOTE_MAX_RETRIES": 1,
    "REMOTE_RETRY_BACKOFF": 0.01,
    "REMOTE_READ_TIMEOUT": 5.0,
}

Incoming = aio_pika.abc.AbstractIncomingMessage


@dataclass
class Audience:
    """The audience service running in-process."""

    app: FastAPI
    client: httpx.AsyncClient
    handled: Handled

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def dispatcher(self) -> Dispatcher:
        dispatcher: Dispatcher = self.runtime.state["dispatcher"]
        return dispatcher

    async def create_group(self, name: str, emails: list[str]) -> int:
        """A static group of these addresses (each member named after its address), through the API."""
        members = [{"email": email, "name": f"name of {email}"} for email in emails]
        response = await self.client.post("/internal/v1/groups", json={"name": name, "members": members})
        assert response.status_code == 201, response.text
        group_id: int = response.json()["group_id"]
        return group_id

    async def resolution(self, campaign_id: int) -> dict[str, Any] | None:
        """The campaign's row in audience.resolutions."""
        async with self.runtime.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM resolutions WHERE campaign_id = $1", campaign_id)
        return None if row is None else dict(row)

    async def dispatched(self, campaign_id: int) -> dict[str, Any]:
        """The campaign's resolution once the dispatcher has queued all of it."""

        async def check() -> dict[str, Any]:
            row = await self.resolution(campaign_id)
            assert row is not None and row["status"] == "dispatched", row
            return row

        return await eventually(check)

    async def staged(self, campaign_id: int) -> list[tuple[int, str, str]]:
        """(recipient_id, email, name) of the campaign's staged recipients, in order."""
        async with self.runtime.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT recipient_id, email, name FROM campaign_recipients"
                " WHERE campaign_id = $1 ORDER BY recipient_id",
                campaign_id,
            )
        return [(r["recipient_id"], r["email"], r["name"]) for r in rows]


async def listen_to_events(
    channel: aio_pika.abc.AbstractChannel, *routing_keys: str
) -> aio_pika.abc.AbstractQueue:
    """An exclusive queue receiving the events of these routing keys from the events exchange."""
    queue = await channel.declare_queue(exclusive=True)
    for routing_key in routing_keys:
        await queue.bind(topology.EVENTS.name, routing_key=routing_key)
    return queue


async def take(queue: aio_pika.abc.AbstractQueue, into: list[Incoming]) -> list[Incoming]:
    """Move every message waiting in the queue into `into` (acknowledged on receipt)."""
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        into.append(message)
    return into


async def collect(
    queue: aio_pika.abc.AbstractQueue, enough: Callable[[list[Incoming]], bool], within: float = 20.0
) -> list[Incoming]:
    """Messages of the queue, read until `enough` of them arrived (or fail after `within` s)."""
    received: list[Incoming] = []

    async def check() -> bool:
        return enough(await take(queue, received))

    await eventually(check, within)
    return received


def about(campaign_id: int, messages: list[Incoming]) -> list[Incoming]:
    """The messages whose body names this campaign."""
    return [m for m in messages if json.loads(m.body)["campaign_id"] == campaign_id]


async def waiting(channel: aio_pika.abc.AbstractChannel, queue_name: str) -> int:
    """How many messages are ready in an existing queue."""
    queue = await channel.declare_queue(queue_name, passive=True)
    assert queue.declaration_result.message_count is not None
    return queue.declaration_result.message_count


async def stage_and_finish(
    conn: asyncpg.Connection,
    campaign_id: int,
    account_id: int,
    priority: int,
    group_ids: list[int],
    trace: dict[str, str] | None = None,
) -> Counts:
    """Resolve stored groups as the service does, step by step, on this connection."""
    resolutions = ResolutionRepository(conn)
    await resolutions.begin(campaign_id, account_id, priority, trace or {})
    for position, group_id in enumerate(group_ids, start=1):
        await resolutions.stage_group(campaign_id, position, group_id)
    return await resolutions.finish(campaign_id)


def campaign_started(
    account_id: int,
    group_ids: list[int],
    *,
    priority: int = 0,
    subject: str = "Olá",
    html: str = "<p>Olá</p>",
    text: str | None = None,
) -> CampaignStarted:
    """A campaign.started event of a new campaign for these groups."""
    return CampaignStarted(
        campaign_id=unique_id(),
        account_id=account_id,
        sender=SenderIdentity(name="Notícias", email="news@example.com"),
        subject=subject,
        html=html,
        text=text,
        group_ids=group_ids,
        priority=priority,
    )
