"""Publishes a batch of events to RabbitMQ in one write, and awaits their confirms together.

`ConfirmedPublisher` publishes each event it is given as its own persistent AMQP message (with
its event id as message id), the batch's frames marshalled together and handed to the
connection as one write. `Bundled` in front of it makes the opens and clicks of a batch ONE
such message (`EngagementsRecorded`): a persistent message each cost RabbitMQ ~100-150 us of CPU,
more than a whole pixel request, on the same cores (profiled), so the broker fell behind. Publishing the same events one `basic_publish` at a time (and, before,
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
import struct
from collections.abc import Sequence
from functools import lru_cache

import aio_pika
import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands, frame

from services.tracking import engagement
from services.tracking.engagement import Outgoing
from services.tracking.event_buffer import BatchPublisher
from shared.contracts import topology

# AMQP 0-9-1 framing (section 4.2.3) of the content header and body frames, marshalled here
# rather than through pamqp: its generic encoder was ~80 % of the publisher's CPU (profiled). A
# test checks these bytes against pamqp's for the same message.
_HEADER_FRAME, _BODY_FRAME = 2, 3
_FRAME_END = b"\xce"
_FRAME = struct.Struct(">BHI")  # frame type, channel, payload size
# ... then the header payload: class id, weight, body size (the property flags follow).
_HEADER = struct.Struct(">BHIHHQ")
_HEADER_FIELDS_SIZE = 2 + 2 + 8 + 2
_BASIC_CLASS = 60
# Properties present: content-type (bit 15), delivery-mode (bit 12), message-id (bit 7); their
# values follow in that order.
_PROPERTY_FLAGS = struct.pack(">H", 1 << 15 | 1 << 12 | 1 << 7)
_PERSISTENT = 2


def _short_string(value: str) -> bytes:
    data = value.encode()
    return bytes((len(data),)) + data


_CONTENT_TYPE = _short_string("application/json")
_DELIVERY_MODE = bytes((_PERSISTENT,))


# The Basic.Publish frame of a routing key on a channel: the same bytes for every event.
@lru_cache(maxsize=64)
def _publish_frame(channel_number: int, routing_key: str) -> bytes:
    publish = commands.Basic.Publish(exchange=topology.EVENTS.name, routing_key=routing_key, mandatory=True)
    return frame.marshal(publish, channel_number)


def marshal_message(event: Outgoing, channel_number: int, max_content_size: int) -> bytes:
    """The frames publishing `event` as a persistent JSON message with its event id as message
    id: Basic.Publish (mandatory), content header, then body frames of at most `max_content_size`."""
    body = event.body
    properties = _CONTENT_TYPE + _DELIVERY_MODE + _short_string(event.event_id)
    header = _HEADER.pack(
        _HEADER_FRAME, channel_number, _HEADER_FIELDS_SIZE + len(properties), _BASIC_CLASS, 0, len(body)
    )
    chunks = (body[i : i + max_content_size] for i in range(0, len(body), max_content_size))
    return b"".join(
        (
            _publish_frame(channel_number, event.routing_key),
            header,
            _PROPERTY_FLAGS,
            properties,
            _FRAME_END,
            *(_FRAME.pack(_BODY_FRAME, channel_number, len(chunk)) + chunk + _FRAME_END for chunk in chunks),
        )
    )


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
        payload = b"".join(
            marshal_message(event, channel.number, channel.max_content_size) for event in batch
        )
        loop = asyncio.get_running_loop()
        confirmations: list[asyncio.Future[object]] = []
        async with channel.lock:
            # Cancelled while the write queue is full, nothing was queued nor counted. Once queued,
            # the confirmations are registered before this task yields, so before the writer
            # sends the batch and long before the broker can confirm it.
            await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False))
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


class Bundled:
    """Publishes the opens and clicks of a batch as one `EngagementsRecorded` message through
    `publisher` (they all share its outcome); any other event goes as it is, in the same write."""

    def __init__(self, publisher: BatchPublisher) -> None:
        self._publisher = publisher

    async def publish(self, batch: Sequence[Outgoing]) -> list[BaseException | None]:
        """Publish `batch`: per event, None once confirmed, else the reason it was not."""
        engagements = [event for event in batch if engagement.is_engagement(event)]
        others = [event for event in batch if not engagement.is_engagement(event)]
        messages = [engagement.recorded(engagements)] if engagements else []
        outcomes = iter(await self._publisher.publish([*messages, *others]))
        bundled = next(outcomes) if messages else None
        # `others` kept their order, so their outcomes follow the bundle's in that order.
        return [bundled if engagement.is_engagement(event) else next(outcomes) for event in batch]
