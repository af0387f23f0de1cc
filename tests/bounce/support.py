"""What the bounce tests share: the service running in-process, and what its handlers finished."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import aio_pika
import asyncpg
import httpx
from fastapi import FastAPI

from shared.broker import publish_event
from shared.contracts import MessageSent, topology, utc_now
from shared.contracts.events import Event
from shared.contracts.headers import CAMPAIGN_ID_HEADER, DELIVERY_ID_HEADER, delivery_id
from shared.service import Runtime
from tests.support import Handled, eventually, unique_id

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback"
TOPIC_ACCOUNT = 7
OTHER_TOPIC = "arn:aws:sns:us-east-1:123456789012:someone-else"
RAW_SECRET = "raw-delivery-secret"

E = TypeVar("E", bound=Event)


def address() -> str:
    """An address no other test uses."""
    return f"user{uuid.uuid4().hex[:12]}@example.com"


def ses_notification(
    kind: str,
    *,
    provider_message_id: str,
    email: str,
    headers: dict[str, str] | None = None,
    bounce_type: str = "Permanent",
    subtype: str = "General",
    diagnostic: str = "smtp; 550 5.1.1 user unknown",
    feedback_type: str = "abuse",
    at: datetime | None = None,
) -> dict[str, Any]:
    """An SES notification shaped like AWS's samples ("Amazon SNS notification examples")."""
    now = (at or utc_now()).isoformat().replace("+00:00", "Z")
    mail = {
        "timestamp": now,
        "source": "news@mailer.example",
        "messageId": provider_message_id,
        "destination": [email],
        "headersTruncated": False,
        "headers": [{"name": name, "value": value} for name, value in (headers or {}).items()],
    }
    document: dict[str, Any] = {"notificationType": kind, "mail": mail}
    if kind == "Bounce":
        document["bounce"] = {
            "bounceType": bounce_type,
            "bounceSubType": subtype,
            "bouncedRecipients": [
                {"emailAddress": email, "action": "failed", "status": "5.1.1", "diagnosticCode": diagnostic}
            ],
            "timestamp": now,
            "feedbackId": uuid.uuid4().hex,
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        }
    elif kind == "Complaint":
        document["complaint"] = {
            "userAgent": "AnyCompany Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": email}],
            "complaintFeedbackType": feedback_type,
            "timestamp": now,
            "feedbackId": uuid.uuid4().hex,
        }
    else:
        document["delivery"] = {
            "timestamp": now,
            "processingTimeMillis": 546,
            "recipients": [email],
            "smtpResponse": "250 ok:  Message 64111812 accepted",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
        }
    return document


def our_headers(campaign_id: int, recipient_id: int) -> dict[str, str]:
    """The X-Mailer headers the sender puts on a message."""
    return {CAMPAIGN_ID_HEADER: str(campaign_id), DELIVERY_ID_HEADER: delivery_id(campaign_id, recipient_id)}


def sns_fields(message: dict[str, Any] | str, topic: str = TOPIC, **overrides: str) -> dict[str, str]:
    """The unsigned fields of an SNS Notification carrying `message`."""
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": utc_now().isoformat().replace("+00:00", "Z"),
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    } | overrides


def sent(**overrides: Any) -> MessageSent:
    """A MessageSent with a provider message id of its own."""
    values: dict[str, Any] = {
        "campaign_id": unique_id(),
        "account_id": unique_id(),
        "recipient_id": 3,
        "email": "Ana@example.com",
        "name": "Ana",
        "provider_message_id": f"<{random.getrandbits(64):x}@email.amazonses.com>",
        "sent_at": utc_now(),
    }
    return MessageSent(**(values | overrides))


@dataclass
class Bounce:
    """The bounce service running in-process, and an HTTP client to it."""

    app: FastAPI
    handled: Handled
    http: httpx.AsyncClient

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def publish(self, event: Event) -> None:
        """Publish the event to the events exchange as the sender's outbox does."""
        await publish_event(self.runtime.broker, event)

    async def rows(self, provider_message_id: str) -> list[asyncpg.Record]:
        """The rows of bounce.sent_messages under this provider id."""
        async with self.runtime.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(
                "SELECT * FROM sent_messages WHERE provider_message_id = $1", provider_message_id
            )
        return rows

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of the bounce schema, as the service sees them."""
        async with self.runtime.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows


@dataclass
class Published:
    """Exclusive queues receiving the events of chosen types published from now on."""

    channel: aio_pika.abc.AbstractChannel
    queues: dict[str, aio_pika.abc.AbstractQueue] = field(default_factory=dict)
    seen: dict[str, list[Event]] = field(default_factory=dict)

    async def listen(self, *event_types: type[Event]) -> None:
        """Start receiving these event types."""
        for event_type in event_types:
            queue = await self.channel.declare_queue(exclusive=True)
            await queue.bind(topology.EVENTS.name, routing_key=event_type.routing_key)
            self.queues[event_type.routing_key] = queue

    async def about(self, event_type: type[E], email: str, count: int = 1) -> list[E]:
        """The events of this type about this address, once `count` arrived (tests share the
        vhost, so other tests' events are set aside by address)."""
        key = event_type.routing_key
        seen = self.seen.setdefault(key, [])

        async def enough() -> list[E]:
            while (message := await self.queues[key].get(no_ack=True, fail=False)) is not None:
                seen.append(event_type.model_validate_json(message.body))
            found = [e for e in seen if isinstance(e, event_type) and getattr(e, "email", None) == email]
            assert len(found) >= count, f"{len(found)} {event_type.__name__} about {email}"
            return found

        return await eventually(enough)

    async def none_about(self, event_type: type[E], email: str) -> None:
        """Assert that no event of this type about this address arrived (so far)."""
        key = event_type.routing_key
        seen = self.seen.setdefault(key, [])
        while (message := await self.queues[key].get(no_ack=True, fail=False)) is not None:
            seen.append(event_type.model_validate_json(message.body))
        assert [e for e in seen if getattr(e, "email", None) == email] == []
