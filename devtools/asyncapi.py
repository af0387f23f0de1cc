"""The AsyncAPI document of every message the platform publishes and consumes on RabbitMQ:
`python -m devtools.asyncapi [--check]` writes `docs/asyncapi.json` (or fails if it is stale).

Consumers come from the services' own FastStream routers (what they subscribe to, with the
payload their handlers accept). Publishing mostly goes through the outbox, not FastStream
publishers, so every event class of `shared.contracts.events` is declared here as a publisher
on `mailer.events` under its routing key; sender's per-account queues are started at run time
and are declared here for the document only. A test keeps the committed file current.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitQueue
from faststream.specification import AsyncAPI

from services.audience import handlers as audience_handlers
from services.bounce import brake_handlers as bounce_brake_handlers
from services.bounce import handlers as bounce_handlers
from services.campaign import handlers as campaign_handlers
from services.campaign import send_handlers as campaign_send_handlers
from services.sender import handlers as sender_handlers
from services.sender import test_send as sender_test_send
from shared.contracts import events, topology

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"

_DESCRIPTION = """Events and commands of Mailer on RabbitMQ. Events are published (persistent, with
publisher confirms) to the topic exchange `mailer.events` under their routing key; each consumer
reads them from its own durable queue `<consumer>.<routing key>`. Every event carries `event_id`
(consumers deduplicate on it), `occurred_at` and `schema_version`.

Other systems send mail by publishing `send.requested` to `mailer.events` (the same fields and
idempotency rules as `POST /public/v1/sends`; `system` names the calling system of its API keys)
and read the answer, `send.accepted` or `send.rejected` (with `system` and `idempotency_key`),
from a queue of their own bound to `mailer.events`."""


def _event_classes() -> list[type[events.Event]]:
    found = [
        cls
        for _, cls in inspect.getmembers(events, inspect.isclass)
        if issubclass(cls, events.Event)
        and cls.__module__ == events.__name__
        and "routing_key" in cls.__dict__
    ]
    return sorted(found, key=lambda cls: cls.routing_key)


def build_broker() -> RabbitBroker:
    """A broker (never connected) holding every subscriber and publisher of the platform."""
    broker = RabbitBroker()
    for router in (
        campaign_handlers.router,
        campaign_send_handlers.router,
        audience_handlers.router,
        sender_handlers.router,
        sender_test_send.router,
        bounce_handlers.router,
        bounce_brake_handlers.router,
    ):
        broker.include_router(router)
    for cls in _event_classes():
        broker.publisher(
            exchange=topology.EVENTS,
            routing_key=cls.routing_key,
            schema=cls,
            title=f"{cls.routing_key}:publish",
            description=inspect.cleandoc(cls.__doc__ or ""),
        )
    broker.publisher(
        exchange=topology.SEND,
        routing_key=topology.account_routing_key(0).replace("0", "{account_id}"),
        schema=events.SendBatch,
        title="account.{account_id}:publish",
        description="Audience queues a campaign's recipients to the sending account's queue, in batches.",
    )

    async def _send_batch(batch: events.SendBatch) -> None:
        """Sender sends a batch of one campaign (one consumer per active account, started at run time)."""

    broker.subscriber(
        RabbitQueue("sender.account.{account_id}", routing_key="account.{account_id}"),
        topology.SEND,
        title="sender.account.{account_id}:consume",
    )(_send_batch)
    broker.publisher(
        topology.SENDER_TEST_SEND,
        schema=events.TestSendRequested,
        title="sender.test-send:request",
        description="Campaign asks a sender for a test send (request/reply; the reply is a TestSendOutcome).",
    )
    return broker


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a JSON object."""
    spec = AsyncAPI(build_broker(), title="Mailer messaging", version="1", description=_DESCRIPTION)
    generated: dict[str, Any] = json.loads(spec.to_specification().to_json())
    return generated


def render() -> str:
    """The document as committed: indented, keys sorted, one trailing newline."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write the document, or with `--check` report whether the committed one is current."""
    text = render()
    if "--check" in argv:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != text:
            print(f"{DOCUMENT} is stale: run python -m devtools.asyncapi", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
