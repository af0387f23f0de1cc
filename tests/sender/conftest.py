"""Fixtures of the sender tests: the sender service running in-process on the run's real
PostgreSQL and RabbitMQ vhost with a recording transport, and a listener for its delivery events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity
from fastapi import FastAPI

from services.sender.accounts import SendingAccount, SendingAccounts
from services.sender.app import create_app
from services.sender.settings import SenderSettings
from shared.broker import publish_event
from shared.contracts import (
    AccountConfigured,
    CampaignCancelled,
    CampaignStarted,
    DeliveryEvent,
    Event,
    Message,
    MessageFailed,
    MessageIndeterminate,
    MessageSent,
    MessageSkipped,
    SendBatch,
    topology,
)
from shared.errors import RetryLater
from shared.service import Runtime
from tests.sender.fakes import RecordingTransports
from tests.support import eventually, running


@dataclass
class RunningSender:
    """The sender service running in-process, and how tests talk to it."""

    app: FastAPI
    client: httpx.AsyncClient
    transports: RecordingTransports

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def accounts(self) -> SendingAccounts:
        accounts: SendingAccounts = self.runtime.state["sender"].accounts
        return accounts

    def served(self, account_id: int) -> SendingAccount | None:
        """The account as this sender serves it, or None."""
        try:
            return self.accounts.get(account_id)
        except RetryLater:
            return None

    async def publish(self, event: Event) -> None:
        """Publish an event to the events exchange, as its producer would."""
        await publish_event(self.runtime.broker, event)

    async def publish_batch(self, batch: SendBatch, priority: int = 5) -> None:
        """Publish a SendBatch to its account's queue, as audience would."""
        await self.runtime.broker.publish(
            batch,
            exchange=topology.SEND.name,
            routing_key=topology.account_routing_key(batch.account_id),
            persist=True,
            priority=priority,
        )

    async def configure(self, account: AccountConfigured) -> SendingAccount:
        """Publish an active account's configuration; wait until its consumer runs with it."""
        assert account.active, "use publish() for an inactive account"
        await self.publish(account)

        async def started() -> SendingAccount:
            served = self.served(account.account_id)
            assert served is not None and served.config == account, f"not served with {account}"
            assert served.consuming, "consumer not started yet"
            return served

        return await eventually(started)

    async def start_campaign(self, campaign: CampaignStarted) -> None:
        """Publish CampaignStarted; wait until the sender keeps its content."""
        await self.publish(campaign)

        async def kept() -> bool:
            content = await self.fetchval(
                "SELECT content FROM sender.campaigns WHERE campaign_id = $1", campaign.campaign_id
            )
            return content is not None

        await eventually(kept)

    async def cancel_campaign(self, campaign_id: int) -> None:
        """Publish CampaignCancelled; wait until the sender knows."""
        await self.publish(CampaignCancelled(campaign_id=campaign_id))

        async def cancelled() -> bool:
            return bool(
                await self.fetchval(
                    "SELECT cancelled FROM sender.campaigns WHERE campaign_id = $1", campaign_id
                )
            )

        await eventually(cancelled)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.runtime.pool.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def deliveries(self, campaign_id: int) -> dict[int, asyncpg.Record]:
        """The campaign's delivery rows by recipient id."""
        async with self.runtime.pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM sender.deliveries WHERE campaign_id = $1", campaign_id)
        return {row["recipient_id"]: row for row in rows}

    async def statuses(self, campaign_id: int) -> dict[int, str]:
        """The campaign's delivery statuses by recipient id."""
        return {rid: row["status"] for rid, row in (await self.deliveries(campaign_id)).items()}


@pytest.fixture
def transports() -> RecordingTransports:
    return RecordingTransports()


@pytest.fixture
async def sender(
    make_settings: Callable[..., Any], transports: RecordingTransports
) -> AsyncIterator[RunningSender]:
    """The sender service, its consumers started, sending through recording transports."""
    app = create_app(make_settings(SenderSettings), make_transport=transports)
    async with running(app) as client:
        yield RunningSender(app, client, transports)


_DELIVERY_EVENTS: dict[str, type[DeliveryEvent]] = {
    event.routing_key: event for event in (MessageSent, MessageFailed, MessageSkipped, MessageIndeterminate)
}


@dataclass
class DeliveryEvents:
    """Delivery events seen on the events exchange, in arrival order."""

    received: list[DeliveryEvent] = field(default_factory=list)

    async def keep(self, message: AbstractIncomingMessage) -> None:
        model = _DELIVERY_EVENTS[message.routing_key or ""]
        self.received.append(model.model_validate_json(message.body))

    def of(self, campaign_id: int) -> list[DeliveryEvent]:
        """The events about one campaign."""
        return [e for e in self.received if e.campaign_id == campaign_id]

    async def wait_for(self, campaign_id: int, count: int, within: float = 20.0) -> list[DeliveryEvent]:
        """The campaign's events once there are `count` of them."""

        async def arrived() -> list[DeliveryEvent]:
            events = self.of(campaign_id)
            assert len(events) >= count, f"{len(events)} of {count} events: {events}"
            return events

        return await eventually(arrived, within=within)


@pytest.fixture
async def delivery_events(rabbitmq_url: str) -> AsyncIterator[DeliveryEvents]:
    """Every message.sent / failed / skipped event published while the test runs."""
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            topology.EVENTS.name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for model in _DELIVERY_EVENTS.values():
            await queue.bind(exchange, routing_key=model.routing_key)
        events = DeliveryEvents()
        await queue.consume(events.keep, no_ack=True)
        yield events
    finally:
        await connection.close()


class Queues:
    """What RabbitMQ says about the vhost's queues (through a connection of the test's own)."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection) -> None:
        self._connection = connection

    async def _declared(self, name: str) -> tuple[int, int] | None:
        # A passive declare of a missing queue closes its channel: one channel per question.
        async with self._connection.channel() as channel:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except ChannelNotFoundEntity:
                return None
            result = queue.declaration_result
            return int(result.consumer_count or 0), int(result.message_count or 0)

    async def consumers(self, name: str) -> int | None:
        """How many consumers the queue has (None if it does not exist)."""
        declared = await self._declared(name)
        return None if declared is None else declared[0]

    async def ready(self, name: str) -> int | None:
        """How many messages wait in the queue (None if it does not exist)."""
        declared = await self._declared(name)
        return None if declared is None else declared[1]

    async def publish(self, exchange: str, routing_key: str, message: Message) -> None:
        """Publish a contract message as JSON, as another service would."""
        async with self._connection.channel() as channel:
            target = await channel.get_exchange(exchange, ensure=False)
            await target.publish(
                aio_pika.Message(
                    message.model_dump_json().encode(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
            )


@pytest.fixture
async def queues(rabbitmq_url: str) -> AsyncIterator[Queues]:
    """Inspect the vhost's queues and publish to it from outside any service."""
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        yield Queues(connection)
    finally:
        await connection.close()
