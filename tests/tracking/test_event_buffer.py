"""The buffer between the hot path and RabbitMQ: confirmed batches, bounded memory, no loss on a
transient failure, a flush at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.tracking import engagement
from services.tracking.engagement import Outgoing
from services.tracking.event_buffer import BatchPublisher, EventBuffer
from shared.contracts import MessageOpened
from tests.support import eventually, unique_id
from tests.tracking.conftest import Published, Tracking, links, path


def _open(recipient_id: int = 1) -> Outgoing:
    return engagement.opened(1, recipient_id, machine=False)


def _buffer(
    capacity: int = 100, batch_size: int = 10, put_wait: float = 0.05, linger: float = 0.0
) -> tuple[EventBuffer, CollectorRegistry]:
    registry = CollectorRegistry()
    return EventBuffer(
        capacity=capacity, batch_size=batch_size, put_wait=put_wait, registry=registry, linger=linger
    ), registry


class Broker:
    """A stand-in publisher: records what it published; can be held, or fail."""

    def __init__(self) -> None:
        self.published: list[Outgoing] = []
        self.open = asyncio.Event()
        self.open.set()
        self.failing = False

    async def publish(self, batch: Sequence[Outgoing]) -> list[BaseException | None]:
        await self.open.wait()
        if self.failing:
            raise ConnectionError("broker away")
        self.published.extend(batch)
        return [None] * len(batch)

    async def has_published(self, count: int) -> None:
        """Wait until `count` events were published."""

        async def enough() -> bool:
            return len(self.published) >= count

        await eventually(enough)


async def _running(buffer: EventBuffer, publisher: BatchPublisher) -> asyncio.Task[None]:
    task = asyncio.create_task(buffer.run(publisher))
    await asyncio.sleep(0)
    return task


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class TestBatches:
    async def test_events_waiting_together_leave_in_batches_in_order(self) -> None:
        buffer, registry = _buffer(batch_size=10)
        broker = Broker()
        events = [_open(n) for n in range(25)]
        for event in events:
            assert await buffer.put(event)

        task = await _running(buffer, broker)
        await broker.has_published(25)
        await _stop(task)

        assert broker.published == events
        assert registry.get_sample_value("tracking_publish_batch_size_count") == 3
        assert registry.get_sample_value("tracking_publish_batch_size_sum") == 25
        assert len(buffer) == 0

    async def test_events_arriving_within_the_linger_leave_together(self) -> None:
        buffer, registry = _buffer(batch_size=10, linger=0.2)
        broker = Broker()
        task = await _running(buffer, broker)
        events = [_open(n) for n in range(3)]

        for event in events:
            await buffer.put(event)
            await asyncio.sleep(0.02)
        await broker.has_published(3)
        await _stop(task)

        assert broker.published == events
        assert registry.get_sample_value("tracking_publish_batch_size_count") == 1

    async def test_a_full_batch_does_not_wait_for_the_linger(self) -> None:
        buffer, _ = _buffer(batch_size=5, linger=30.0)
        broker = Broker()
        task = await _running(buffer, broker)

        for n in range(5):
            await buffer.put(_open(n))
        await broker.has_published(5)
        await _stop(task)

        assert len(buffer) == 0

    async def test_a_failed_batch_is_kept_and_published_in_order_when_the_broker_is_back(self) -> None:
        buffer, _ = _buffer()
        broker = Broker()
        broker.failing = True
        task = await _running(buffer, broker)
        first, second = _open(1), _open(2)
        await buffer.put(first)
        await asyncio.sleep(0.1)
        await buffer.put(second)
        assert len(buffer) == 2

        broker.failing = False
        await broker.has_published(2)
        await _stop(task)

        assert broker.published == [first, second]


class TestBackPressure:
    async def test_a_full_buffer_holds_the_request_until_there_is_room(self) -> None:
        buffer, _ = _buffer(capacity=2, batch_size=1, put_wait=5.0)
        broker = Broker()
        broker.open.clear()
        task = await _running(buffer, broker)
        await buffer.put(_open(1))
        await buffer.put(_open(2))

        waiting = asyncio.create_task(buffer.put(_open(3)))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        broker.open.set()

        assert await waiting
        await broker.has_published(3)
        await _stop(task)

    async def test_past_the_wait_the_event_is_dropped_and_counted_not_held_forever(self) -> None:
        buffer, registry = _buffer(capacity=2, put_wait=0.05)
        await buffer.put(_open(1))
        await buffer.put(_open(2))

        assert not await buffer.put(_open(3))

        assert len(buffer) == 2
        assert registry.get_sample_value("tracking_events_dropped_total", {"reason": "full"}) == 1
        assert registry.get_sample_value("tracking_buffered_events") == 2


class TestShutdown:
    async def test_drain_publishes_what_is_left_including_a_batch_cut_off_in_flight(self) -> None:
        buffer, _ = _buffer(batch_size=2)
        broker = Broker()
        broker.open.clear()
        task = await _running(buffer, broker)
        events = [_open(n) for n in range(3)]
        for event in events:
            await buffer.put(event)
        await asyncio.sleep(0.05)
        await _stop(task)  # cancelled while its first batch awaited the confirms
        broker.open.set()

        await buffer.drain(broker, within=5)

        assert broker.published == events
        assert len(buffer) == 0

    async def test_what_cannot_be_published_in_time_is_dropped_and_counted(self) -> None:
        buffer, registry = _buffer()
        broker = Broker()
        broker.failing = True
        await buffer.put(_open())

        await buffer.drain(broker, within=0.2)

        assert len(buffer) == 0
        assert registry.get_sample_value("tracking_events_dropped_total", {"reason": "shutdown"}) == 1


@pytest.mark.connected
class TestRealBroker:
    async def test_a_burst_of_opens_reaches_rabbitmq_in_fewer_confirmed_batches_than_events(
        self, tracking: Tracking, published: Published
    ) -> None:
        app, client = tracking
        await published.listen(MessageOpened)
        registry = app.state.runtime.registry
        batches_before = registry.get_sample_value("tracking_publish_batch_size_count") or 0
        events_before = registry.get_sample_value("tracking_publish_batch_size_sum") or 0
        campaign_id = unique_id()

        responses = await asyncio.gather(
            *(client.get(path(links().open_pixel(campaign_id, n))) for n in range(1, 301))
        )

        assert {r.status_code for r in responses} == {200}
        received: list[MessageOpened] = []

        async def all_arrived() -> bool:
            received.extend(await published.arrived(MessageOpened))
            return len(received) >= 300

        await eventually(all_arrived)
        assert sorted(e.recipient_id for e in received if e.campaign_id == campaign_id) == list(range(1, 301))
        batches = registry.get_sample_value("tracking_publish_batch_size_count") - batches_before
        assert registry.get_sample_value("tracking_publish_batch_size_sum") - events_before == 300
        assert batches < 300

    async def test_an_event_no_queue_is_bound_to_is_dropped_and_counted_not_retried_forever(
        self, tracking: Tracking
    ) -> None:
        app, _ = tracking
        runtime = app.state.runtime
        tracker = runtime.state["tracker"]
        dropped_before = (
            runtime.registry.get_sample_value("tracking_events_dropped_total", {"reason": "unroutable"}) or 0
        )

        # No queue is bound to this routing key: the broker returns it.
        await tracker.events.put(_open()._replace(routing_key="test.unbound"))

        async def dropped() -> bool:
            now = (
                runtime.registry.get_sample_value("tracking_events_dropped_total", {"reason": "unroutable"})
                or 0
            )
            return now == dropped_before + 1

        await eventually(dropped)
        assert len(tracker.events) == 0
