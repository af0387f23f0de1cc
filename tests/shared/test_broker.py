"""The delivery policy on the real broker: invalid or permanently failing messages are
dead-lettered with their reason, others are retried with a delay, then dead-lettered."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import aio_pika
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker, RabbitQueue
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from shared.broker import declare_topology, is_outage, make_broker
from shared.contracts import headers, topology
from shared.errors import PermanentFailure
from shared.settings import ServiceSettings
from tests.support import eventually

pytestmark = pytest.mark.connected


class Job(BaseModel):
    mode: Literal["ok", "permanent", "crash"]


@pytest.fixture
async def harness(make_settings: Callable[..., Any], rabbitmq_url: str) -> AsyncIterator[dict[str, Any]]:
    """A broker with one subscriber on a fresh queue, recording what its handler saw."""
    settings = make_settings(ServiceSettings, MAX_DELIVERY_ATTEMPTS=2, SERVICE_NAME="test")
    broker: RabbitBroker = make_broker(
        settings, tracer_provider=TracerProvider(), registry=CollectorRegistry()
    )
    queue = RabbitQueue(
        f"test.{uuid.uuid4().hex}", arguments={"x-dead-letter-exchange": topology.DEAD_LETTER.name}
    )
    calls: list[tuple[str, float]] = []

    @broker.subscriber(queue)
    async def handle(job: Job) -> None:
        calls.append((job.mode, time.monotonic()))
        if job.mode == "permanent":
            raise PermanentFailure("this can never work")
        if job.mode == "crash":
            raise RuntimeError("database away")

    await broker.connect()
    await declare_topology(broker)
    await broker.start()
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel()
    dead_letters = await channel.declare_queue(topology.DEAD_LETTER_QUEUE.name, passive=True)

    async def dead_lettered() -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Dead letters of this test's queue; other tests' dead letters are left in place."""
        found, others = [], []
        while (message := await dead_letters.get(fail=False)) is not None:
            if message.headers.get(headers.ORIGINAL_QUEUE_HEADER) == queue.name:
                await message.ack()
                found.append(message)
            else:
                others.append(message)
        for message in others:  # unacknowledged until now, so each was read once
            await message.nack(requeue=True)
        return found

    yield {"broker": broker, "queue": queue, "calls": calls, "dead_lettered": dead_lettered}
    await connection.close()
    await broker.stop()


class TestDeliveryPolicy:
    async def test_a_handled_message_is_acknowledged(self, harness: dict[str, Any]) -> None:
        await harness["broker"].publish({"mode": "ok"}, queue=harness["queue"])

        async def handled() -> bool:
            return [mode for mode, _ in harness["calls"]] == ["ok"]

        await eventually(handled)
        assert await harness["dead_lettered"]() == []

    async def test_an_invalid_body_is_dead_lettered_at_once_with_the_reason(
        self, harness: dict[str, Any]
    ) -> None:
        await harness["broker"].publish(b"not json at all", queue=harness["queue"])

        letters = await eventually(harness["dead_lettered"])

        assert len(letters) == 1
        assert letters[0].body == b"not json at all"
        assert str(letters[0].headers[headers.FAILURE_REASON_HEADER]).startswith("ValidationError")
        assert harness["calls"] == []

    async def test_a_permanent_failure_is_dead_lettered_without_retry(self, harness: dict[str, Any]) -> None:
        await harness["broker"].publish({"mode": "permanent"}, queue=harness["queue"])

        letters = await eventually(harness["dead_lettered"])

        assert letters[0].headers[headers.FAILURE_REASON_HEADER] == "PermanentFailure: this can never work"
        assert [mode for mode, _ in harness["calls"]] == ["permanent"]

    async def test_other_failures_are_retried_after_a_delay_then_dead_lettered(
        self, harness: dict[str, Any]
    ) -> None:
        await harness["broker"].publish({"mode": "crash"}, queue=harness["queue"])

        letters = await eventually(harness["dead_lettered"], within=30)

        calls = harness["calls"]
        assert [mode for mode, _ in calls] == ["crash", "crash"]  # MAX_DELIVERY_ATTEMPTS=2
        assert calls[1][1] - calls[0][1] >= topology.RETRY_DELAYS_SECONDS[0] - 0.5
        assert letters[0].headers[headers.FAILURE_REASON_HEADER] == "RuntimeError: database away"
        assert letters[0].headers[headers.ATTEMPT_HEADER] == 2


class TestOutage:
    """An outage of the database or broker is never the message's fault: it is not dead-lettered."""

    @pytest.mark.parametrize(
        "exc",
        [
            ConnectionRefusedError(111, "Connection refused"),
            ConnectionResetError(),
            asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
            asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
            asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            ),
        ],
    )
    def test_connection_failures_are_outages(self, exc: Exception) -> None:
        assert is_outage(exc)

    def test_a_wrapped_outage_is_one(self) -> None:
        try:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError as inner:
                raise RuntimeError("could not load the campaign") from inner
        except RuntimeError as outer:
            assert is_outage(outer)

    @pytest.mark.parametrize(
        "exc",
        [RuntimeError("bug"), TimeoutError(), FileNotFoundError(), asyncpg.exceptions.UniqueViolationError()],
    )
    def test_other_failures_are_not(self, exc: Exception) -> None:
        assert not is_outage(exc)
