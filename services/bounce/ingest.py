"""Acting on one feedback notification, once, inside the caller's transaction.

The notification is recorded under its SNS MessageId first; a MessageId seen before does
nothing more, so SNS's and SQS's redeliveries are harmless. Each recipient's feedback is traced
back to our delivery by the provider message id (recorded from `message.sent`), else by the
X-Mailer headers SES echoes back; feedback about a message that is not ours is recorded with
no campaign and counted for the account. Events go through the outbox: they leave only if the
transaction commits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from services.bounce import repository as bounce_repo
from services.bounce import suppression
from services.bounce.notifications import Feedback, Recipient
from services.bounce.settings import BounceSettings
from shared import outbox
from shared.contracts import (
    AddressSuppressed,
    DeliveryEvent,
    Event,
    MessageBounced,
    MessageComplained,
    MessageDelivered,
    RecipientUnsubscribed,
)
from shared.service import Runtime


@dataclass(frozen=True)
class Source:
    """Where a notification came from: its SNS MessageId and topic, and the sending account."""

    message_id: str
    topic_arn: str
    account_id: int


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rules:
    """The soft-bounce limit and its window."""

    soft_bounce_limit: int
    soft_bounce_window: timedelta

    @classmethod
    def of(cls, settings: BounceSettings) -> Rules:
        """The rules the settings set."""
        return cls(settings.SOFT_BOUNCE_LIMIT, timedelta(days=settings.SOFT_BOUNCE_WINDOW_DAYS))


@dataclass(frozen=True)
class _Delivery:
    campaign_id: int
    recipient_id: int
    account_id: int
    email: str


def _delivery_event(feedback: Feedback, delivery: _Delivery, recipient: Recipient) -> DeliveryEvent:
    ids = {
        "campaign_id": delivery.campaign_id,
        "recipient_id": delivery.recipient_id,
        "account_id": delivery.account_id,
        "email": delivery.email,
    }
    if feedback.kind == "bounce":
        kind = {"Permanent": "permanent", "Transient": "transient"}.get(feedback.bounce_type, "undetermined")
        return MessageBounced.model_validate(
            ids
            | {
                "kind": kind,
                "subtype": feedback.subtype,
                "diagnostic": recipient.diagnostic,
                "bounced_at": feedback.occurred_at,
            }
        )
    if feedback.kind == "complaint":
        return MessageComplained.model_validate(
            ids | {"feedback_type": feedback.subtype, "complained_at": feedback.occurred_at}
        )
    return MessageDelivered.model_validate(ids | {"delivered_at": feedback.occurred_at})


async def _our_delivery(
    conn: asyncpg.Connection, feedback: Feedback, account_id: int, recipient: Recipient
) -> _Delivery | None:
    sent = await bounce_repo.SentMessageRepository(conn).find(feedback.provider_message_id)
    if sent is not None:
        return _Delivery(sent["campaign_id"], sent["recipient_id"], sent["account_id"], sent["email"])
    # The message.sent event may not have arrived yet (or was for another replica's database
    # in a restore); the headers we put on every message still name the delivery.
    ids = feedback.delivery_ids()
    if ids is None:
        return None
    return _Delivery(ids[0], ids[1], account_id, recipient.email)


async def ingest(
    conn: asyncpg.Connection, source: Source, feedback: Feedback, payload: str, rules: Rules
) -> bool:
    """Record and act on a notification; False (and nothing done) if it was received before."""
    feedback_repo = bounce_repo.FeedbackRepository(conn)
    if not await feedback_repo.record_notification(
        source.message_id, source.topic_arn, source.account_id, feedback.kind, payload
    ):
        return False
    events: list[Event] = []
    for recipient in feedback.recipients:
        delivery = await _our_delivery(conn, feedback, source.account_id, recipient)
        # The account that sent it, as the sender recorded; else the topic's.
        account_id = delivery.account_id if delivery else source.account_id
        email = suppression.normalise(recipient.email)
        await feedback_repo.record(
            bounce_repo.FeedbackRow(
                message_id=source.message_id,
                account_id=account_id,
                kind=feedback.kind,
                email=email,
                provider_message_id=feedback.provider_message_id,
                campaign_id=delivery.campaign_id if delivery else None,
                recipient_id=delivery.recipient_id if delivery else None,
                bounce_type=feedback.bounce_type,
                subtype=feedback.subtype,
                diagnostic=recipient.diagnostic,
                occurred_at=feedback.occurred_at,
            )
        )
        if delivery is not None:
            events.append(_delivery_event(feedback, delivery, recipient))
        events += await _suppress(conn, feedback, recipient, email, delivery, account_id, rules)
    await outbox.add_events(conn, events)
    return True


async def _suppress(
    conn: asyncpg.Connection,
    feedback: Feedback,
    recipient: Recipient,
    email: str,
    delivery: _Delivery | None,
    account_id: int,
    rules: Rules,
) -> list[Event]:
    soft_bounces = 0
    if suppression.counts_as_soft_bounce(feedback):
        since = feedback.occurred_at - rules.soft_bounce_window
        soft_bounces = await bounce_repo.FeedbackRepository(conn).transient_bounces_since(email, since)
    reason = suppression.reason_to_suppress(feedback, soft_bounces, rules.soft_bounce_limit)
    if reason is None:
        return []
    campaign_id = delivery.campaign_id if delivery else None
    events: list[Event] = []
    if await bounce_repo.SuppressionRepository(conn).add(
        email,
        reason,
        diagnostic=recipient.diagnostic or feedback.subtype,
        account_id=account_id,
        campaign_id=campaign_id,
        suppressed_at=feedback.occurred_at,
    ):
        events.append(
            AddressSuppressed(
                email=email,
                reason=reason,
                diagnostic=recipient.diagnostic or feedback.subtype,
                account_id=account_id,
                campaign_id=campaign_id,
            )
        )
    if reason == "complaint":
        # Every complaint, even for an address already suppressed by a bounce: the unsubscribe
        # outlives an admin taking the address off the suppression list.
        events.append(
            RecipientUnsubscribed(
                email=email,
                scope="all",
                campaign_id=campaign_id,
                recipient_id=delivery.recipient_id if delivery else None,
                reason="complaint",
            )
        )
    return events


async def receive(runtime: Runtime, source: Source, feedback: Feedback, payload: str) -> bool:
    """Ingest in a transaction of its own (the outbox publishes after commit); False if the
    notification was received before."""
    settings = runtime.settings
    assert isinstance(settings, BounceSettings)
    async with runtime.transaction() as conn:
        fresh = await ingest(conn, source, feedback, payload, Rules.of(settings))
    if not fresh:
        log.info("feedback already received", extra={"sns_message_id": source.message_id})
    return fresh
