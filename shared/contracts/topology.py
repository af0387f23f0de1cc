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

AUDIENCE_ADDRESS_SUPPRESSED = _event_queue("audience", events.AddressSuppressed)
AUDIENCE_ADDRESS_UNSUPPRESSED = _event_queue("audience", events.AddressUnsuppressed)
AUDIENCE_RECIPIENT_UNSUBSCRIBED = _event_queue("audience", events.RecipientUnsubscribed)

SENDER_CAMPAIGN_STARTED = _event_queue("sender", events.CampaignStarted)
SENDER_CAMPAIGN_CANCELLED = _event_queue("sender", events.CampaignCancelled)
SENDER_CAMPAIGN_PAUSED = _event_queue("sender", events.CampaignPaused)
SENDER_CAMPAIGN_RESUMED = _event_queue("sender", events.CampaignResumed)
SENDER_ACCOUNT_CONFIGURED = _event_queue("sender", events.AccountConfigured)
SENDER_ACCOUNT_PAUSED = _event_queue("sender", events.AccountPaused)
SENDER_ACCOUNT_RESUMED = _event_queue("sender", events.AccountResumed)
SENDER_ADDRESS_SUPPRESSED = _event_queue("sender", events.AddressSuppressed)
SENDER_ADDRESS_UNSUPPRESSED = _event_queue("sender", events.AddressUnsuppressed)
SENDER_RECIPIENT_UNSUBSCRIBED = _event_queue("sender", events.RecipientUnsubscribed)

CAMPAIGN_RECIPIENTS_RESOLVED = _event_queue("campaign", events.CampaignRecipientsResolved)
CAMPAIGN_CAMPAIGN_FAILED = _event_queue("campaign", events.CampaignFailed)
CAMPAIGN_MESSAGE_SENT = _event_queue("campaign", events.MessageSent)
CAMPAIGN_MESSAGE_FAILED = _event_queue("campaign", events.MessageFailed)
CAMPAIGN_MESSAGE_SKIPPED = _event_queue("campaign", events.MessageSkipped)
CAMPAIGN_MESSAGE_INDETERMINATE = _event_queue("campaign", events.MessageIndeterminate)
CAMPAIGN_MESSAGE_OPENED = _event_queue("campaign", events.MessageOpened)
CAMPAIGN_LINK_CLICKED = _event_queue("campaign", events.LinkClicked)
CAMPAIGN_ENGAGEMENTS_RECORDED = _event_queue("campaign", events.EngagementsRecorded)
CAMPAIGN_ACCOUNT_PAUSED = _event_queue("campaign", events.AccountPaused)
CAMPAIGN_ACCOUNT_RESUMED = _event_queue("campaign", events.AccountResumed)
CAMPAIGN_ACCOUNT_HELD = _event_queue("campaign", events.AccountHeld)
CAMPAIGN_UNSUBSCRIBE_REQUESTED = _event_queue("campaign", events.UnsubscribeRequested)
CAMPAIGN_MESSAGE_BOUNCED = _event_queue("campaign", events.MessageBounced)
CAMPAIGN_MESSAGE_COMPLAINED = _event_queue("campaign", events.MessageComplained)
# Send requests of other systems (API sends over RabbitMQ): publish `SendRequested` to `EVENTS`
# with routing key `send.requested`; the answer is `send.accepted` / `send.rejected` on `EVENTS`.
CAMPAIGN_SEND_REQUESTED = _event_queue("campaign", events.SendRequested)

BOUNCE_MESSAGE_SENT = _event_queue("bounce", events.MessageSent)
BOUNCE_MESSAGE_BOUNCED = _event_queue("bounce", events.MessageBounced)
BOUNCE_MESSAGE_COMPLAINED = _event_queue("bounce", events.MessageComplained)
BOUNCE_ACCOUNT_CONFIGURED = _event_queue("bounce", events.AccountConfigured)
BOUNCE_ACCOUNT_RESUMED = _event_queue("bounce", events.AccountResumed)
# Bounce's own announcements, for the optional mirror into each SES account's suppression list.
BOUNCE_ADDRESS_SUPPRESSED = _event_queue("bounce", events.AddressSuppressed)
BOUNCE_ADDRESS_UNSUPPRESSED = _event_queue("bounce", events.AddressUnsuppressed)

# Declared by every service at start, so an event published before its consumer ever ran waits.
EVENT_QUEUES = (
    AUDIENCE_CAMPAIGN_STARTED,
    AUDIENCE_ADDRESS_SUPPRESSED,
    AUDIENCE_ADDRESS_UNSUPPRESSED,
    AUDIENCE_RECIPIENT_UNSUBSCRIBED,
    SENDER_CAMPAIGN_STARTED,
    SENDER_CAMPAIGN_CANCELLED,
    SENDER_CAMPAIGN_PAUSED,
    SENDER_CAMPAIGN_RESUMED,
    SENDER_ACCOUNT_CONFIGURED,
    SENDER_ACCOUNT_PAUSED,
    SENDER_ACCOUNT_RESUMED,
    SENDER_ADDRESS_SUPPRESSED,
    SENDER_ADDRESS_UNSUPPRESSED,
    SENDER_RECIPIENT_UNSUBSCRIBED,
    CAMPAIGN_RECIPIENTS_RESOLVED,
    CAMPAIGN_CAMPAIGN_FAILED,
    CAMPAIGN_MESSAGE_SENT,
    CAMPAIGN_MESSAGE_FAILED,
    CAMPAIGN_MESSAGE_SKIPPED,
    CAMPAIGN_MESSAGE_INDETERMINATE,
    CAMPAIGN_MESSAGE_OPENED,
    CAMPAIGN_LINK_CLICKED,
    CAMPAIGN_ENGAGEMENTS_RECORDED,
    CAMPAIGN_ACCOUNT_PAUSED,
    CAMPAIGN_ACCOUNT_RESUMED,
    CAMPAIGN_ACCOUNT_HELD,
    CAMPAIGN_UNSUBSCRIBE_REQUESTED,
    CAMPAIGN_MESSAGE_BOUNCED,
    CAMPAIGN_MESSAGE_COMPLAINED,
    CAMPAIGN_SEND_REQUESTED,
    BOUNCE_MESSAGE_SENT,
    BOUNCE_MESSAGE_BOUNCED,
    BOUNCE_MESSAGE_COMPLAINED,
    BOUNCE_ACCOUNT_CONFIGURED,
    BOUNCE_ACCOUNT_RESUMED,
    BOUNCE_ADDRESS_SUPPRESSED,
    BOUNCE_ADDRESS_UNSUPPRESSED,
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


# What every sender replica must apply at once (not only the one that takes the durable queue's
# message): an account configured, paused or resumed; a campaign paused, resumed or cancelled.
SENDER_CONTROL_PATTERNS = ("account.*", "campaign.*")


def sender_control_queue(instance: str, pattern: str) -> RabbitQueue:
    """A sender replica's own queue of control events matching `pattern`: exclusive and gone
    with the replica, which reloads the state from its database when it starts again."""
    return RabbitQueue(
        f"sender.control.{instance}.{pattern.split('.', 1)[0]}",
        routing_key=pattern,
        durable=False,
        exclusive=True,
        auto_delete=True,
    )


# Test sends (request/reply): campaign asks, through RabbitMQ's direct reply-to, the sender that
# owns the transports to send one message and report the SMTP conversation. Not durable and
# with a short TTL: a test nobody waits for any more must not be sent later.
TEST_SEND_TIMEOUT_SECONDS = 30
SENDER_TEST_SEND = RabbitQueue(
    "sender.test-send",
    durable=False,
    arguments={"x-message-ttl": TEST_SEND_TIMEOUT_SECONDS * 1000},
)
