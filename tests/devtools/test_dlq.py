"""The dead-letter command line against a real RabbitMQ: list, show, replay and discard."""

from __future__ import annotations

import io
import uuid

import aio_pika
import pytest
from faststream.rabbit import RabbitBroker

from devtools import dlq
from shared.broker import declare_topology
from shared.contracts import headers, topology

pytestmark = pytest.mark.connected

ORIGINAL = topology.CAMPAIGN_MESSAGE_SENT


async def _dead_letter(channel: aio_pika.abc.AbstractChannel, message_id: str, reason: str) -> None:
    """What the delivery policy publishes when it gives up on a message."""
    exchange = await channel.get_exchange(topology.DEAD_LETTER.name)
    await exchange.publish(
        aio_pika.Message(
            b'{"campaign_id": 1}',
            message_id=message_id,
            content_type="application/json",
            headers={
                headers.FAILURE_REASON_HEADER: reason,
                headers.ORIGINAL_QUEUE_HEADER: ORIGINAL.name,
                headers.FAILED_AT_HEADER: "2026-11-23T12:00:00+00:00",
                headers.ATTEMPT_HEADER: 5,
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            },
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=ORIGINAL.name,
    )


async def _run(url: str, action: str, key: str | None = None, everything: bool = False) -> str:
    out = io.StringIO()
    assert await dlq.command(url, action, key, everything, out=out) == 0
    return out.getvalue()


async def test_a_dead_letter_is_listed_shown_replayed_and_another_discarded(own_vhost: str) -> None:
    broker = RabbitBroker(own_vhost)
    await broker.connect()
    try:
        await declare_topology(broker)
    finally:
        await broker.stop()
    poison, other = str(uuid.uuid4()), str(uuid.uuid4())
    connection = await aio_pika.connect(own_vhost)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await _dead_letter(channel, poison, "ValidationError: campaign_id missing")
        await _dead_letter(channel, other, "RuntimeError: boom")

        listing = await _run(own_vhost, "list")
        assert "2 dead-lettered message(s)" in listing
        assert poison in listing and ORIGINAL.name in listing and "ValidationError" in listing
        # Looking does not take anything away.
        assert "2 dead-lettered" in await _run(own_vhost, "list")

        shown = await _run(own_vhost, "show", "#1")
        assert poison in shown and '"campaign_id": 1' in shown

        assert f"replayed {poison} to {ORIGINAL.name}" in await _run(own_vhost, "replay", poison)
        original = await channel.get_queue(ORIGINAL.name)
        replayed = await original.get(timeout=5)
        assert replayed.message_id == poison and replayed.body == b'{"campaign_id": 1}'
        # Back as a fresh message: no failure headers, attempts counted from one again, trace kept.
        assert headers.FAILURE_REASON_HEADER not in replayed.headers
        assert headers.ATTEMPT_HEADER not in replayed.headers
        assert "traceparent" in replayed.headers
        await replayed.ack()

        assert f"discarded {other}" in await _run(own_vhost, "discard", other)
        assert "0 dead-lettered message(s)" in await _run(own_vhost, "list")
    finally:
        await connection.close()


async def test_an_unknown_id_is_an_error(own_vhost: str) -> None:
    broker = RabbitBroker(own_vhost)
    await broker.connect()
    try:
        await declare_topology(broker)
    finally:
        await broker.stop()
    with pytest.raises(LookupError):
        await dlq.command(own_vhost, "replay", "nope", False, out=io.StringIO())
