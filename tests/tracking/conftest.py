"""Fixtures of the tracking tests: the service in-process, signed links, and what it publishes."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aio_pika
import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.tracking.app import create_app
from services.tracking.settings import TrackingSettings
from shared.contracts import EngagementsRecorded, LinkClicked, MessageOpened, topology
from shared.contracts.events import Event
from shared.links import LinkSigner, TrackingLinks
from tests.support import eventually, running

CURRENT_KEY = "tracking-key-2026"
PREVIOUS_KEY = "tracking-key-2025"
SIGNING_KEYS = f"{CURRENT_KEY}, {PREVIOUS_KEY}"
BASE_URL = "http://test"
# What a reader's browser sends: not a machine.
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"

Tracking = tuple[FastAPI, httpx.AsyncClient]
E = TypeVar("E", bound=Event)


def links(key: str = CURRENT_KEY) -> TrackingLinks:
    """The links a message carries, signed with `key`."""
    return TrackingLinks(BASE_URL, LinkSigner(key))


def path(url: str) -> str:
    """The path of a tracking link, to request from the in-process service."""
    return url.removeprefix(BASE_URL)


@pytest.fixture(scope="module")
async def tracking(make_settings: Callable[..., Any]) -> AsyncIterator[Tracking]:
    """The tracking service (signing with the current key, still trusting the previous one)."""
    # No linger: each test's events leave at once, before the next test listens for its own
    # (batches with a linger are tested on the buffer itself and run in the end-to-end tests).
    settings = make_settings(
        TrackingSettings, TRACKING_SIGNING_KEYS=SIGNING_KEYS, TRACKING_BATCH_LINGER_SECONDS=0
    )
    app = create_app(settings)
    async with running(app) as client:
        client.headers["user-agent"] = BROWSER
        yield app, client


# Opens and clicks travel together, in `EngagementsRecorded` messages: listened to as such and
# unpacked into the items tests look for.
_BUNDLED = {MessageOpened.routing_key: "opens", LinkClicked.routing_key: "clicks"}


class Published:
    """Exclusive queues receiving the events of chosen types published from now on."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self._channel = channel
        self._queues: dict[str, aio_pika.abc.AbstractQueue] = {}
        self._unpacked: dict[str, deque[Event]] = defaultdict(deque)

    async def listen(self, *event_types: type[Event]) -> None:
        """Start receiving these event types."""
        for event_type in event_types:
            routing_key = _routing_key(event_type)
            if routing_key not in self._queues:
                queue = await self._channel.declare_queue(exclusive=True)
                await queue.bind(topology.EVENTS.name, routing_key=routing_key)
                self._queues[routing_key] = queue

    async def _take(self, event_type: type[E]) -> E | None:
        """The next event of this type already published, if any."""
        if event_type.routing_key not in _BUNDLED:
            message = await self._queues[event_type.routing_key].get(no_ack=True, fail=False)
            return None if message is None else _event(event_type, message)
        unpacked = self._unpacked[event_type.routing_key]
        while not unpacked:
            message = await self._queues[_routing_key(event_type)].get(no_ack=True, fail=False)
            if message is None:
                return None
            batch = _event(EngagementsRecorded, message)
            self._unpacked[MessageOpened.routing_key].extend(batch.opens)
            self._unpacked[LinkClicked.routing_key].extend(batch.clicks)
        event = unpacked.popleft()
        assert isinstance(event, event_type)
        return event

    async def arrived(self, event_type: type[E]) -> list[E]:
        """The events of this type that arrived since last asked (possibly none)."""
        found = []
        while (event := await self._take(event_type)) is not None:
            found.append(event)
        return found

    async def next(self, event_type: type[E]) -> E:
        """The next event of this type, waiting for it."""

        async def one() -> E:
            event = await self._take(event_type)
            assert event is not None, f"no {event_type.__name__} was published"
            return event

        return await eventually(one)


def _routing_key(event_type: type[Event]) -> str:
    return EngagementsRecorded.routing_key if event_type.routing_key in _BUNDLED else event_type.routing_key


def _event(event_type: type[E], message: aio_pika.abc.AbstractIncomingMessage) -> E:
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    event = event_type.model_validate_json(message.body)
    assert message.message_id == str(event.event_id)
    return event


@pytest.fixture
async def published(rabbitmq_url: str) -> AsyncIterator[Published]:
    """What tracking publishes from now on (call `listen` first)."""
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        # As every service declares it, so listening works before any service ever ran.
        await channel.declare_exchange(topology.EVENTS.name, aio_pika.ExchangeType.TOPIC, durable=True)
        yield Published(channel)
    finally:
        await connection.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the run's database, to look at what tracking kept."""
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()
