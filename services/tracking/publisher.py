"""Publishes a batch of events to RabbitMQ in one write, and awaits their confirms together.

Each event stays its own persistent AMQP message (consumers read one event per message, with its
event id as message id), but the batch's frames are marshalled together and handed to the
connection as one write. Publishing the same events one `basic_publish` at a time (and, before,
through FastStream's publisher with its middlewares) costs a task, a lock, timeouts, a drain and
a socket write per event: profiled at about 4x the CPU per event, it made the publisher fall
behind the pixel and redirect under load.

aiormq has no public call for this, so `publish` does what `aiormq.Channel.basic_publish` does for
one message (delivery tag, confirmation future, message id for a returned message, frames), for
the whole batch under the channel lock. It relies on aiormq 7 internals; the tests publishing to
a real broker (delivery, confirms, unroutable returns) catch a change there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika
import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from services.tracking.engagement import Outgoing
from shared.contracts import topology

_JSON = "application/json"
_PERSISTENT = 2


class ConfirmedPublisher:
    """A connection of its own to RabbitMQ, with a confirming channel, for the events tracking
    publishes (robust: it reconnects by itself after an outage)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None

    async def connect(self) -> None:
        """Open the connection and the channel (raises while the broker is away)."""
        self._connection = await aio_pika.connect_robust(self._url)
        # Unroutable messages come back and fail their confirmation (`PublishError`).
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)

    async def close(self) -> None:
        """Close the connection, if open."""
        if self._connection is not None:
            await self._connection.close()

    async def publish(self, batch: Sequence[Outgoing]) -> list[BaseException | None]:
        """Publish `batch`: per event, None once confirmed, else the reason it was not."""
        if self._channel is None:
            raise aiormq.exceptions.ChannelInvalidStateError("the publisher is not connected")
        channel = await self._channel.get_underlay_channel()
        assert isinstance(channel, aiormq.Channel)
        size = channel.max_content_size
        frames: list[commands.Basic.Publish | ContentHeader | ContentBody] = []
        for event in batch:
            properties = commands.Basic.Properties(
                content_type=_JSON, delivery_mode=_PERSISTENT, message_id=event.event_id
            )
            frames.append(
                commands.Basic.Publish(
                    exchange=topology.EVENTS.name, routing_key=event.routing_key, mandatory=True
                )
            )
            frames.append(ContentHeader(properties=properties, body_size=len(event.body)))
            frames.extend(ContentBody(event.body[i : i + size]) for i in range(0, len(event.body), size))
        payload = ChannelFrame.marshall(channel_number=channel.number, frames=frames)
        loop = asyncio.get_running_loop()
        confirmations: list[asyncio.Future[object]] = []
        async with channel.lock:
            # Cancelled while the write queue is full, nothing was queued nor counted. Once queued,
            # the confirmations are registered before this task yields, so before the writer
            # sends the batch and long before the broker can confirm it.
            await channel.write_queue.put(payload)
            for event in batch:
                channel.delivery_tag += 1
                # A plain future: aiormq's own (`create_future`) registers itself in a store at
                # every level of channel and connection, which cost ~12 % of the service's CPU
                # (profiled). The wait below does what that store is for: fail them on a close.
                confirmation = loop.create_future()
                channel.confirmations[channel.delivery_tag] = confirmation
                # How aiormq finds the confirmation of a message the broker returns.
                channel.message_id_delivery_tag[event.event_id] = channel.delivery_tag
                confirmations.append(confirmation)
        confirmed = asyncio.gather(*confirmations, return_exceptions=True)
        try:
            await asyncio.wait((confirmed, channel.closing), return_when=asyncio.FIRST_COMPLETED)
            if not confirmed.done():
                # The channel closed (broker away): what it had not confirmed never will be.
                closed = aiormq.exceptions.ChannelInvalidStateError("channel closed before confirming")
                for confirmation in confirmations:
                    if not confirmation.done():
                        confirmation.set_exception(closed)
            outcomes = await confirmed
        finally:
            for event in batch:
                channel.message_id_delivery_tag.pop(event.event_id, None)
        return [outcome if isinstance(outcome, BaseException) else None for outcome in outcomes]
