"""The RabbitMQ broker every service uses, and what happens to a message that fails.

Ack policy is explicit: a handler that returns acknowledges its message (after its transaction
committed). A handler that raises never loses the message:

- `PermanentFailure` or an invalid body (validation error, unknown schema version): the message
  is published to the dead-letter exchange with the reason in a header, then acknowledged.
- anything else (database or broker away, `RetryLater`, a bug): the message is published to a
  retry tier (5 s, 30 s, then 5 min) with its attempt count in a header, then acknowledged; past
  `MAX_DELIVERY_ATTEMPTS` it is dead-lettered with the last error as the reason. An outage of
  PostgreSQL or RabbitMQ (a connection refused, reset or closed) never dead-letters, however long
  it lasts: the message keeps coming back every 5 minutes until the dependency returns.

We count attempts ourselves rather than lean on the broker's delivery limits (RabbitMQ 4.3
changed which nacks count). If that republish itself fails, the message is rejected and the
queue's dead-letter exchange keeps it: never a silent drop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiormq
import asyncpg
from faststream import AckPolicy, BaseMiddleware
from faststream.exceptions import AckMessage, NackMessage, RejectMessage
from faststream.message import StreamMessage
from faststream.rabbit import Channel, RabbitBroker
from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from shared.contracts import headers, topology
from shared.contracts.events import Event
from shared.errors import PermanentFailure
from shared.settings import ServiceSettings
from shared.telemetry import traces

log = logging.getLogger(__name__)

_HANDLER_OUTCOMES = (AckMessage, NackMessage, RejectMessage)
# A dependency away rather than a message that fails: connection refused, reset or lost, the
# database shutting down or starting. Not timeouts: a query that always times out is a poison.
_OUTAGES: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether the failure is PostgreSQL or RabbitMQ being away (also when wrapped)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, _OUTAGES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _attempt(message: StreamMessage[Any]) -> int:
    try:
        return int(message.headers.get(headers.ATTEMPT_HEADER, 1))
    except (TypeError, ValueError):
        return 1


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def delivery_policy(max_attempts: int) -> type[BaseMiddleware]:
    """Middleware class that retries or dead-letters failed messages (see the module docstring)."""

    class DeliveryPolicy(BaseMiddleware):
        async def consume_scope(
            self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
        ) -> Any:
            try:
                return await call_next(msg)
            except _HANDLER_OUTCOMES:
                raise
            except Exception as exc:
                await self._divert(msg, exc)
                await msg.ack()
                return None

        async def _divert(self, msg: StreamMessage[Any], exc: Exception) -> None:
            broker: RabbitBroker = self.context.get("broker")
            queue: str = self.context.get("handler_").queue.name
            attempt = _attempt(msg)
            reason = _describe(exc)
            permanent = isinstance(exc, PermanentFailure | ValidationError)
            raw = msg.raw_message
            common: dict[str, Any] = {
                "persist": True,
                "priority": raw.priority,
                "correlation_id": msg.correlation_id,
                "message_id": msg.message_id,
                "content_type": raw.content_type,
            }
            if permanent or (attempt >= max_attempts and not is_outage(exc)):
                log.error(
                    "message dead-lettered",
                    extra={"queue": queue, "attempt": attempt, "reason": reason},
                    exc_info=not permanent,
                )
                await broker.publish(
                    msg.body,
                    exchange=topology.DEAD_LETTER.name,
                    routing_key=queue,
                    headers={
                        **msg.headers,
                        headers.FAILURE_REASON_HEADER: reason,
                        headers.ORIGINAL_QUEUE_HEADER: queue,
                        headers.FAILED_AT_HEADER: datetime.now(UTC).isoformat(),
                    },
                    **common,
                )
            else:
                delay = topology.retry_delay(attempt + 1)
                log.warning(
                    "message will be retried",
                    extra={"queue": queue, "attempt": attempt, "delay_s": delay, "reason": reason},
                    exc_info=True,
                )
                await broker.publish(
                    msg.body,
                    exchange=topology.retry_exchange(delay).name,
                    routing_key=queue,
                    headers={**msg.headers, headers.ATTEMPT_HEADER: attempt + 1},
                    **common,
                )

    return DeliveryPolicy


def make_broker(
    settings: ServiceSettings,
    *,
    tracer_provider: TracerProvider,
    registry: CollectorRegistry,
) -> RabbitBroker:
    """A RabbitBroker with confirms, bounded prefetch, tracing, metrics and the delivery policy."""
    return RabbitBroker(
        settings.RABBITMQ_URL,
        # Confirms are on by default; an unroutable message must fail loudly, not vanish.
        default_channel=Channel(prefetch_count=settings.RABBITMQ_PREFETCH, on_return_raises=True),
        ack_policy=AckPolicy.REJECT_ON_ERROR,
        middlewares=(
            *(
                [RabbitTelemetryMiddleware(tracer_provider=tracer_provider)]
                if traces(tracer_provider)
                else []
            ),
            RabbitPrometheusMiddleware(registry=registry, app_name=settings.SERVICE_NAME),
            delivery_policy(settings.MAX_DELIVERY_ATTEMPTS),
        ),
        logger=logging.getLogger(f"mailer.{settings.SERVICE_NAME}.broker"),
        graceful_timeout=20.0,
    )


async def publish_event(broker: RabbitBroker, event: Event) -> None:
    """Publish an event now, bypassing the outbox (for work with no transaction to join):
    persistent, confirmed by the broker, with its event id as message id."""
    await broker.publish(
        event,
        exchange=topology.EVENTS.name,
        routing_key=event.routing_key,
        message_id=str(event.event_id),
        persist=True,
    )


async def declare_topology(broker: RabbitBroker) -> None:
    """Declare the exchanges and queues every service relies on (idempotent)."""
    for exchange in (topology.EVENTS, topology.SEND, topology.DEAD_LETTER):
        await broker.declare_exchange(exchange)
    dead_letters = await broker.declare_queue(topology.DEAD_LETTER_QUEUE)
    await dead_letters.bind(topology.DEAD_LETTER.name, routing_key=topology.DEAD_LETTER_QUEUE.routing_key)
    for delay in topology.RETRY_DELAYS_SECONDS:
        await broker.declare_exchange(topology.retry_exchange(delay))
        queue = await broker.declare_queue(topology.retry_queue(delay))
        await queue.bind(topology.retry_exchange(delay).name)
    for event_queue in topology.EVENT_QUEUES:
        queue = await broker.declare_queue(event_queue)
        await queue.bind(topology.EVENTS.name, routing_key=event_queue.routing_key)


async def declare_account_queue(broker: RabbitBroker, account_id: int) -> None:
    """Declare and bind a sending account's queue, so batches published to it always land."""
    queue = await broker.declare_queue(topology.account_queue(account_id))
    await queue.bind(topology.SEND.name, routing_key=topology.account_routing_key(account_id))
