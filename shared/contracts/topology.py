"""Every exchange, queue and routing key of the platform; no other module spells one.

- `EVENTS` (topic) carries events; each consumer has its own durable queue per event, named
  `<consumer>.<routing key>`, so a consumer that is down misses nothing.
- `SEND` (direct) carries `SendBatch` commands to one classic queue per sending account:
  `x-max-priority` lets a higher-priority campaign go first, and single active consumer keeps
  one sender replica per account at a time, so the account's rate limit holds.
- A message that can never succeed is published to `DEAD_LETTER` with the reason in a header
  and lands in `DEAD_LETTER_QUEUE`; queues also dead-letter there when the broker rejects.
- A transient failure goes to a retry tier: a queue whose TTL expires the message back, through
  the default exchange, to the queue it came from (its routing key is that queue's name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faststream.rabbit import ExchangeType, RabbitExchange, RabbitQueue

from shared.contracts import events

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import ClassicQueueArgs

EVENTS = RabbitExchange("mailer.events", type=ExchangeType.TOPIC)
SEND = RabbitExchange("mailer.send", type=ExchangeType.DIRECT)
DEAD_LETTER = RabbitExchange("mailer.dead-letter", type=ExchangeType.TOPIC)
DEAD_LETTER_QUEUE = RabbitQueue("mailer.dead-letter", routing_key="#")

# Delays of successive retries; the last one repeats until the attempt limit.
RETRY_DELAYS_SECONDS = (5, 30, 300)
# Priorities of SendBatch messages: campaign priority 0..9 maps onto them as is.
MAX_PRIORITY = 9

_DEAD_LETTERED: ClassicQueueArgs = {"x-dead-letter-exchange": DEAD_LETTER.name}


def retry_exchange(delay_seconds: int) -> RabbitExchange:
    """The fanout exchange of one retry tier."""
    return RabbitExchange(f"mailer.retry.{delay_seconds}s", type=ExchangeType.FANOUT)


def retry_queue(delay_seconds: int) -> RabbitQueue:
    """The queue of one retry tier: holds messages `delay_seconds`, then sends them back."""
    return RabbitQueue(
        f"mailer.retry.{delay_seconds}s",
        arguments={
            "x-message-ttl": delay_seconds * 1000,
            # The default exchange routes by queue name: the message's routing key.
            "x-dead-letter-exchange": "",
        },
    )


def retry_delay(attempt: int) -> int:
    """Delay before the given attempt (2 = first retry)."""
    return RETRY_DELAYS_SECONDS[min(attempt - 2, len(RETRY_DELAYS_SECONDS) - 1)]


def _event_queue(consumer: str, event: type[events.Event]) -> RabbitQueue:
    return RabbitQueue(
        f"{consumer}.{event.routing_key}", routing_key=event.routing_key, arguments=_DEAD_LETTERED
    )


AUDIENCE_CAMPAIGN_STARTED = _event_queue("audience", events.CampaignStarted)

SENDER_CAMPAIGN_STARTED = _event_queue("sender", events.CampaignStarted)
SENDER_CAMPAIGN_CANCELLED = _event_queue("sender", events.CampaignCancelled)
SENDER_ACCOUNT_CONFIGURED = _event_queue("sender", events.AccountConfigured)

CAMPAIGN_RECIPIENTS_RESOLVED = _event_queue("campaign", events.CampaignRecipientsResolved)
CAMPAIGN_CAMPAIGN_FAILED = _event_queue("campaign", events.CampaignFailed)
CAMPAIGN_MESSAGE_SENT = _event_queue("campaign", events.MessageSent)
CAMPAIGN_MESSAGE_FAILED = _event_queue("campaign", events.MessageFailed)
CAMPAIGN_MESSAGE_SKIPPED = _event_queue("campaign", events.MessageSkipped)
CAMPAIGN_MESSAGE_OPENED = _event_queue("campaign", events.MessageOpened)

BOUNCE_MESSAGE_SENT = _event_queue("bounce", events.MessageSent)

# Declared by every service at start, so an event published before its consumer ever ran waits.
EVENT_QUEUES = (
    AUDIENCE_CAMPAIGN_STARTED,
    SENDER_CAMPAIGN_STARTED,
    SENDER_CAMPAIGN_CANCELLED,
    SENDER_ACCOUNT_CONFIGURED,
    CAMPAIGN_RECIPIENTS_RESOLVED,
    CAMPAIGN_CAMPAIGN_FAILED,
    CAMPAIGN_MESSAGE_SENT,
    CAMPAIGN_MESSAGE_FAILED,
    CAMPAIGN_MESSAGE_SKIPPED,
    CAMPAIGN_MESSAGE_OPENED,
    BOUNCE_MESSAGE_SENT,
)


def account_routing_key(account_id: int) -> str:
    """Routing key of a sending account's SendBatch commands on `SEND`."""
    return f"account.{account_id}"


def account_queue(account_id: int) -> RabbitQueue:
    """The queue of one sending account (classic: RabbitMQ 3.x quorum queues have no priorities)."""
    return RabbitQueue(
        f"sender.account.{account_id}",
        routing_key=account_routing_key(account_id),
        arguments={
            **_DEAD_LETTERED,
            "x-max-priority": MAX_PRIORITY,
            "x-single-active-consumer": True,
        },
    )
