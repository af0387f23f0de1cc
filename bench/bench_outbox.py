"""The transactional outbox: how fast the relay publishes what was committed to the outbox.

5000 `CampaignCancelled` events are written with `shared.outbox.add_event` into the campaign
schema's outbox (a few transactions, not timed); then `OutboxRelay.drain()` is timed until the
outbox is empty. The baseline publishes the same bodies with the same broker and the relay's own
strategy (batches of 200 awaited together, publisher confirms) without the database. The events
land in the declared `sender.campaign.cancelled` queue, which nobody consumes and which is purged
after every measurement. Baseline and relay alternate over a few rounds; the medians are compared.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from faststream.rabbit import RabbitBroker
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from bench import infra
from bench.figures import Figure
from shared import db
from shared.broker import declare_topology, make_broker
from shared.contracts import CampaignCancelled, topology
from shared.outbox import OutboxRelay, add_event
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

EVENTS = 5000
TRANSACTIONS = 5
PUBLISH_BATCH = 200  # the relay's batch size (shared.outbox._BATCH)
ROUNDS = 3
TARGET_RATIO = 0.5
SINK = topology.SENDER_CAMPAIGN_CANCELLED


def _events(first_id: int) -> list[CampaignCancelled]:
    return [CampaignCancelled(campaign_id=first_id + i) for i in range(EVENTS)]


async def _write_outbox(pool: asyncpg.Pool, events: Sequence[CampaignCancelled]) -> None:
    per_transaction = -(-len(events) // TRANSACTIONS)
    for start in range(0, len(events), per_transaction):
        async with pool.acquire() as conn, conn.transaction():
            for event in events[start : start + per_transaction]:
                await add_event(conn, event)


async def _publish_directly(broker: RabbitBroker, events: Sequence[CampaignCancelled]) -> None:
    messages = [(event.model_dump_json().encode(), str(event.event_id)) for event in events]
    for start in range(0, len(messages), PUBLISH_BATCH):
        await asyncio.gather(
            *(
                broker.publish(
                    body,
                    exchange=topology.EVENTS.name,
                    routing_key=CampaignCancelled.routing_key,
                    message_id=message_id,
                    content_type="application/json",
                    persist=True,
                )
                for body, message_id in messages[start : start + PUBLISH_BATCH]
            )
        )


async def _drain(relay: OutboxRelay) -> int:
    published = 0
    while sent := await relay.drain():
        published += sent
    return published


class _Sink:
    """The consumer-less queue the events are routed to: counted, then emptied."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    async def count(self) -> int:
        declared = await self._queue.declare()
        return int(declared.message_count)

    async def purge(self) -> None:
        await self._queue.purge()

    async def expect_and_purge(self, expected: int, what: str) -> None:
        found = await self.count()
        await self.purge()
        if found != expected:
            raise RuntimeError(f"{what}: {found} messages reached {SINK.name}, expected {expected}")


async def _measure(broker: RabbitBroker, pool: asyncpg.Pool, sink: _Sink) -> tuple[list[float], list[float]]:
    relay = OutboxRelay(pool, broker, lock_key="bench.outbox")
    # Warm-up: the connection, the channel's confirm path and the pool's prepared statements.
    await _publish_directly(broker, _events(1)[:PUBLISH_BATCH])
    await _write_outbox(pool, _events(1)[:PUBLISH_BATCH])
    await _drain(relay)
    await sink.expect_and_purge(2 * PUBLISH_BATCH, "warm-up")

    baseline: list[float] = []
    relayed: list[float] = []
    for round_number in range(1, ROUNDS + 1):
        events = _events(round_number * 1_000_000)
        started = time.perf_counter()
        await _publish_directly(broker, events)
        baseline.append(EVENTS / (time.perf_counter() - started))
        await sink.expect_and_purge(EVENTS, "baseline")

        started = time.perf_counter()
        await _write_outbox(pool, events)
        written = time.perf_counter() - started
        started = time.perf_counter()
        published = await _drain(relay)
        relayed.append(EVENTS / (time.perf_counter() - started))
        if published != EVENTS:
            raise RuntimeError(f"the relay published {published} messages, expected {EVENTS}")
        async with pool.acquire() as conn:
            left = await conn.fetchval("SELECT count(*) FROM outbox")
        if left:
            raise RuntimeError(f"{left} messages left in the outbox")
        await sink.expect_and_purge(EVENTS, "relay")
        log.info(
            "round %d: direct %.0f msg/s, relay %.0f msg/s (outbox written at %.0f events/s)",
            round_number,
            baseline[-1],
            relayed[-1],
            EVENTS / written,
        )
    return baseline, relayed


async def run() -> list[Figure]:
    async with infra.environment() as env:
        settings = ServiceSettings(
            ENVIRONMENT="test",
            SERVICE_NAME="bench",
            DATABASE_URL=env.database_url,
            RABBITMQ_URL=env.rabbitmq_url,
            LOG_LEVEL="WARNING",
        )
        broker = make_broker(settings, tracer_provider=TracerProvider(), registry=CollectorRegistry())
        await broker.connect()
        pool = await db.create_pool(env.database_url, "campaign", max_size=2)
        try:
            await declare_topology(broker)
            sink = _Sink(await broker.declare_queue(SINK))
            try:
                baseline, relayed = await _measure(broker, pool, sink)
            finally:
                await sink.purge()
        finally:
            await pool.close()
            await broker.stop()
    return [
        Figure(
            bench="outbox.relay",
            value=statistics.median(relayed),
            unit="msg/s",
            baseline=statistics.median(baseline),
            threshold=TARGET_RATIO,
        )
    ]
