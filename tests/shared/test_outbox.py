"""Publish after commit: what commits is published (with its trace), what rolls back is not."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from shared import db, outbox
from shared.broker import declare_topology, make_broker
from shared.contracts import CampaignCancelled, topology
from shared.settings import ServiceSettings
from tests.support import eventually

pytestmark = pytest.mark.connected


@pytest.fixture
async def setup(
    make_settings: Callable[..., Any], database_url: str, rabbitmq_url: str
) -> AsyncIterator[dict[str, Any]]:
    """A relay over the campaign schema's outbox, and a queue listening to cancellations."""
    provider = TracerProvider()
    broker = make_broker(
        make_settings(ServiceSettings), tracer_provider=provider, registry=CollectorRegistry()
    )
    await broker.connect()
    await declare_topology(broker)
    pool = await db.create_pool(database_url, "campaign", max_size=2)
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(topology.EVENTS.name, routing_key=CampaignCancelled.routing_key)
    yield {
        "pool": pool,
        "relay": outbox.OutboxRelay(pool, broker, lock_key="test.outbox"),
        "queue": queue,
        "tracer": provider.get_tracer("test"),
    }
    await connection.close()
    await pool.close()
    await broker.stop()


async def _received(
    queue: aio_pika.abc.AbstractQueue, campaign_id: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    found = []
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        if json.loads(message.body)["campaign_id"] == campaign_id:
            found.append(message)
    return found


class TestOutbox:
    async def test_a_committed_event_is_published_once_with_its_trace(self, setup: dict[str, Any]) -> None:
        campaign_id = random.randint(10**8, 10**9)
        pool: asyncpg.Pool = setup["pool"]
        with setup["tracer"].start_as_current_span("request") as span:
            async with pool.acquire() as conn, conn.transaction():
                await outbox.add_event(conn, CampaignCancelled(campaign_id=campaign_id))
        trace_id = format(span.get_span_context().trace_id, "032x")

        while await setup["relay"].drain():
            pass

        messages = await eventually(lambda: _received(setup["queue"], campaign_id))
        assert len(messages) == 1
        assert CampaignCancelled.model_validate_json(messages[0].body).campaign_id == campaign_id
        assert messages[0].delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert str(messages[0].headers["traceparent"]).split("-")[1] == trace_id
        async with pool.acquire() as conn:
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM outbox WHERE message_id = $1", messages[0].message_id
                )
                == 0
            )

    async def test_a_rolled_back_event_is_never_published(self, setup: dict[str, Any]) -> None:
        campaign_id = random.randint(10**8, 10**9)
        pool: asyncpg.Pool = setup["pool"]
        with pytest.raises(RuntimeError):
            async with pool.acquire() as conn, conn.transaction():
                await outbox.add_event(conn, CampaignCancelled(campaign_id=campaign_id))
                raise RuntimeError("the change failed")
        while await setup["relay"].drain():
            pass
        marker = random.randint(10**8, 10**9)
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add_event(conn, CampaignCancelled(campaign_id=marker))
        while await setup["relay"].drain():
            pass

        await eventually(lambda: _received(setup["queue"], marker))
        assert await _received(setup["queue"], campaign_id) == []

    async def test_an_event_that_could_not_be_published_stays_and_goes_out_once_the_broker_is_back(
        self, setup: dict[str, Any], make_settings: Callable[..., Any]
    ) -> None:
        campaign_id = random.randint(10**8, 10**9)
        pool: asyncpg.Pool = setup["pool"]
        # A broker not connected (yet): RabbitMQ is away while the relay runs.
        away = make_broker(
            make_settings(ServiceSettings), tracer_provider=TracerProvider(), registry=CollectorRegistry()
        )
        relay = outbox.OutboxRelay(pool, away, lock_key="test.outbox")
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add_event(conn, CampaignCancelled(campaign_id=campaign_id))
        with pytest.raises(Exception):  # noqa: B017 - whatever the client raises, the row must stay
            await relay.drain()
        async with pool.acquire() as conn:
            kept = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE convert_from(body, 'UTF8')::jsonb ->> 'campaign_id' = $1",
                str(campaign_id),
            )
        assert kept == 1

        await away.connect()
        try:
            while await relay.drain():
                pass
        finally:
            await away.stop()
        messages = await eventually(lambda: _received(setup["queue"], campaign_id))
        assert len(messages) == 1
