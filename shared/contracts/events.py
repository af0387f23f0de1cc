"""Messages the services exchange over RabbitMQ.

Every event is immutable, named in the past tense, carries `event_id` (consumers deduplicate on
it), `occurred_at` (UTC) and `schema_version`. A consumer refuses a version it does not know:
the message goes to the dead-letter queue instead of being half understood. Each event declares
its routing key once, as a ClassVar; `topology` builds the queues from it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import ClassVar, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC (storage and events are always UTC)."""
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of events and commands: frozen, tolerant of fields added by newer producers."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: Literal[1] = 1
    event_id: UUID = Field(default_factory=uuid4)
    occurred_at: datetime = Field(default_factory=utc_now)


class Event(Message):
    """Something that happened, published on the events exchange under `routing_key`."""

    routing_key: ClassVar[str]


class SenderIdentity(BaseModel):
    """The From identity of a campaign: display name, address and optional Reply-To."""

    model_config = ConfigDict(frozen=True)

    name: str
    email: EmailStr
    reply_to: EmailStr | None = None


class AttachmentRef(BaseModel):
    """A file of the file store sent with a campaign: attached, or inline (an image the HTML
    shows through `cid:<content_id>`)."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(min_length=1)
    filename: str = Field(min_length=1)
    content_type: str = "application/octet-stream"
    inline: bool = False
    content_id: str | None = None


class CampaignStarted(Event):
    """A campaign was started: audience resolves its groups, sender keeps its content.

    `tracking`: "full" (opens and clicks per recipient), "anonymous" (counted, no recipient
    identity in the links) or "off" (no pixel, links left as written).
    """

    routing_key: ClassVar[str] = "campaign.started"

    campaign_id: int
    account_id: int
    sender: SenderIdentity
    subject: str
    html: str
    text: str | None = None
    group_ids: list[int]
    priority: int = Field(ge=0, le=9)
    attachments: list[AttachmentRef] = Field(default_factory=list)
    tracking: Literal["full", "anonymous", "off"] = "full"
    # Recipients given inline by an API send (at most MAX_INLINE_RECIPIENTS), resolved by
    # audience after the groups like one more group; `recipient_id` is their order.
    recipients: list[Recipient] = Field(default_factory=list)


class CampaignRecipientsResolved(Event):
    """Audience resolved every group of a campaign; `included` recipients are queued for sending."""

    routing_key: ClassVar[str] = "campaign.recipients_resolved"

    campaign_id: int
    account_id: int
    included: int = Field(ge=0)
    invalid: int = Field(ge=0)
    duplicate: int = Field(ge=0)
    suppressed: int = Field(ge=0)
    unsubscribed: int = Field(ge=0)


class CampaignFailed(Event):
    """A campaign cannot be sent (a group failed to resolve, a template error...)."""

    routing_key: ClassVar[str] = "campaign.failed"

    campaign_id: int
    reason: str


class CampaignCancelled(Event):
    """An operator cancelled a campaign: what is not sent yet is skipped."""

    routing_key: ClassVar[str] = "campaign.cancelled"

    campaign_id: int


class CampaignPaused(Event):
    """An operator paused a campaign: nothing more is sent for it until it is resumed."""

    routing_key: ClassVar[str] = "campaign.paused"

    campaign_id: int


class CampaignResumed(Event):
    """A paused campaign goes on where it stopped."""

    routing_key: ClassVar[str] = "campaign.resumed"

    campaign_id: int


class SmtpConnection(BaseModel):
    """How to reach an SMTP server; the password travels and rests Fernet-encrypted only."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int = Field(ge=1, le=65535)
    security: Literal["starttls", "tls", "none"]
    username: str | None = None
    password_encrypted: str | None = None


class SesConnection(BaseModel):
    """An Amazon SES account; the secret key travels and rests Fernet-encrypted only."""

    model_config = ConfigDict(frozen=True)

    region: str
    access_key_id: str
    secret_access_key_encrypted: str
    endpoint_url: str | None = None


class Warmup(BaseModel):
    """The warm-up ramp of a new account: `start_per_day` messages on `started_on`, multiplied
    by `growth_per_day` each following day, until the account's own daily quota is reached."""

    model_config = ConfigDict(frozen=True)

    started_on: date
    start_per_day: int = Field(ge=1)
    growth_per_day: float = Field(default=1.5, gt=1)


class AccountConfigured(Event):
    """A sending account was created or changed; senders (re)configure its consumer.

    `daily_quota`: messages per sliding 24 hours (None: no limit of ours; SES accounts also
    honour the provider's Max24HourSend when `use_provider_limits`). `max_connections`: SMTP
    connections (and sends in flight) of the account.
    """

    routing_key: ClassVar[str] = "account.configured"

    account_id: int
    name: str
    transport: Literal["smtp", "ses"]
    smtp: SmtpConnection | None = None
    ses: SesConnection | None = None
    rate_per_second: float = Field(gt=0)
    active: bool
    daily_quota: int | None = Field(default=None, ge=1)
    warmup: Warmup | None = None
    use_provider_limits: bool = True
    max_connections: int = Field(default=3, ge=1, le=50)
    # The reputation brake (bounce): an SES account with `bounce_control` is judged by the rates
    # SES itself publishes to CloudWatch; any other account by rates counted from our own events.
    # The account is paused for `pause_hours` once a rate reaches its threshold.
    bounce_control: bool = False
    bounce_threshold: float = Field(default=0.05, gt=0, le=1)
    complaint_threshold: float = Field(default=0.001, gt=0, le=1)
    pause_hours: float = Field(default=24, gt=0)


class AccountPaused(Event):
    """Sending for an account stops before its next message (bounce brake, an authentication
    refusal seen by the sender, or an operator). `until`: when it may resume by itself."""

    routing_key: ClassVar[str] = "account.paused"

    account_id: int
    reason: str
    source: Literal["bounce", "sender", "operator"]
    until: datetime | None = None


class AccountResumed(Event):
    """A paused account sends again, highest priority first."""

    routing_key: ClassVar[str] = "account.resumed"

    account_id: int
    reason: str
    source: Literal["bounce", "sender", "operator"]


class AccountHeld(Event):
    """An account waits without failing anything: its 24-hour quota or warm-up limit is
    reached, or the provider throttles it; it goes on by itself at `until`."""

    routing_key: ClassVar[str] = "account.held"

    account_id: int
    reason: Literal["quota", "warmup", "throttled"]
    until: datetime


class Recipient(BaseModel):
    """One resolved recipient of a campaign; `recipient_id` is its code within the campaign."""

    model_config = ConfigDict(frozen=True)

    recipient_id: int = Field(ge=1)
    email: str
    name: str = ""
    fields: dict[str, str] = Field(default_factory=dict)


class SendBatch(Message):
    """Command to the sending account's queue: send this campaign to these recipients."""

    campaign_id: int
    account_id: int
    recipients: list[Recipient] = Field(min_length=1)


class DeliveryEvent(Event):
    """The outcome of one message to one recipient of one campaign."""

    campaign_id: int
    account_id: int
    recipient_id: int
    email: str
    name: str = ""


class MessageSent(DeliveryEvent):
    """The provider accepted the message."""

    routing_key: ClassVar[str] = "message.sent"

    provider_message_id: str
    sent_at: datetime


class MessageFailed(DeliveryEvent):
    """The provider refused the message for good; `reason` is its reply."""

    routing_key: ClassVar[str] = "message.failed"

    reason: str


class MessageSkipped(DeliveryEvent):
    """The message was not sent on purpose (campaign cancelled, address suppressed...)."""

    routing_key: ClassVar[str] = "message.skipped"

    reason: str


class MessageIndeterminate(DeliveryEvent):
    """The sender died during this message's SMTP transaction: it may or may not have left.
    It is not sent again (unless the sender is set to resend), and reported as such."""

    routing_key: ClassVar[str] = "message.indeterminate"

    reason: str


class MessageBounced(DeliveryEvent):
    """The provider reported a bounce. `kind`: "permanent" (the address is suppressed), "transient"
    (counted; suppressed after repeats) or "undetermined"; `subtype` and `diagnostic` as reported."""

    routing_key: ClassVar[str] = "message.bounced"

    kind: Literal["permanent", "transient", "undetermined"]
    subtype: str = ""
    diagnostic: str = ""
    bounced_at: datetime


class MessageComplained(DeliveryEvent):
    """The recipient marked the message as spam (feedback loop); `feedback_type` as reported."""

    routing_key: ClassVar[str] = "message.complained"

    feedback_type: str = ""
    complained_at: datetime


class MessageDelivered(DeliveryEvent):
    """The provider reported the message delivered to the recipient's mail server."""

    routing_key: ClassVar[str] = "message.delivered"

    delivered_at: datetime


class MessageOpened(Event):
    """A recipient's mail client loaded the open pixel. `recipient_id` 0: an anonymous campaign.

    `machine`: loaded by an image proxy, scanner or bot rather than a reader; counted apart."""

    routing_key: ClassVar[str] = "message.opened"

    campaign_id: int
    recipient_id: int
    opened_at: datetime
    machine: bool = False


class LinkClicked(Event):
    """A tracked link of a message was followed. `recipient_id` 0: an anonymous campaign.

    `machine`: followed by a link scanner or bot (or a burst no reader clicks), counted apart."""

    routing_key: ClassVar[str] = "link.clicked"

    campaign_id: int
    recipient_id: int
    url: str
    clicked_at: datetime
    machine: bool = False


class EngagementsRecorded(Event):
    """Opens and clicks published together by tracking: one persistent message for many, since a
    message each cost RabbitMQ more CPU than the pixel itself. Every item keeps its own event id,
    so consumers deduplicate per item and a batch delivered again applies nothing twice."""

    routing_key: ClassVar[str] = "engagements.recorded"

    opens: list[MessageOpened] = Field(default_factory=list)
    clicks: list[LinkClicked] = Field(default_factory=list)


class UnsubscribeRequested(Event):
    """A recipient asked, through a signed link, to leave one campaign ("campaign") or every
    future one ("all"). Tracking knows only the ids; campaign, which has the address, records it
    and announces `RecipientUnsubscribed`."""

    routing_key: ClassVar[str] = "unsubscribe.requested"

    campaign_id: int
    recipient_id: int = Field(ge=1)
    scope: Literal["campaign", "all"]
    reason: str = ""
    requested_at: datetime


class AddressSuppressed(Event):
    """An address must not receive mail from any account (permanent bounce, complaint, repeated
    soft bounces, or an admin)."""

    routing_key: ClassVar[str] = "address.suppressed"

    email: str
    reason: Literal["bounce", "complaint", "soft_bounce", "manual"]
    diagnostic: str = ""
    account_id: int | None = None
    campaign_id: int | None = None


class AddressUnsuppressed(Event):
    """An admin removed an address from the suppression list."""

    routing_key: ClassVar[str] = "address.unsuppressed"

    email: str


class RecipientUnsubscribed(Event):
    """A recipient left one campaign (`scope` "campaign") or every future campaign ("all")."""

    routing_key: ClassVar[str] = "recipient.unsubscribed"

    email: str
    scope: Literal["campaign", "all"]
    campaign_id: int | None = None
    recipient_id: int | None = None
    reason: str = ""


# The most recipients one API send may carry inline; more belong in a group.
MAX_INLINE_RECIPIENTS = 1000


class SendRecipient(BaseModel):
    """A recipient given inline in a send request; `fields` are its personalisation values."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: str = Field(min_length=3, max_length=320)
    name: str = Field(default="", max_length=300)
    fields: dict[str, str] = Field(default_factory=dict, max_length=50)


class SendSpec(BaseModel):
    """What another system asks to send, over HTTP (`POST /public/v1/sends`) or RabbitMQ
    (`send.requested`): the same fields, the same rules.

    - Recipients: `recipients` inline (at most 1000) or `group_id` (a group of audience), not both.
    - Content: `subject` + `html` (+ `text`), or `template` (the key of a stored template);
      `variables` are values every recipient's message sees (a recipient's own `fields` win).
    - Sender: `sender` (an address the caller is allowed to use), or `message_type` (and
      optionally `tenant`) resolved by the routing rules of the calling system.
    - `scheduled_at`: not before this time (UTC); now when omitted.
    """

    name: str | None = Field(default=None, max_length=300)
    recipients: list[SendRecipient] | None = Field(
        default=None, min_length=1, max_length=MAX_INLINE_RECIPIENTS
    )
    group_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    subject: str | None = Field(default=None, min_length=1, max_length=998)
    html: str | None = Field(default=None, min_length=1, max_length=2_000_000)
    text: str | None = Field(default=None, max_length=2_000_000)
    template: str | None = Field(default=None, min_length=1, max_length=100)
    variables: dict[str, str] = Field(default_factory=dict, max_length=100)
    sender: EmailStr | None = None
    message_type: str | None = Field(default=None, min_length=1, max_length=100)
    tenant: str | None = Field(default=None, min_length=1, max_length=100)
    priority: int = Field(default=5, ge=0, le=9)
    scheduled_at: datetime | None = None
    tracking: Literal["full", "anonymous", "off"] = "full"

    @model_validator(mode="after")
    def _complete(self) -> SendSpec:
        if (self.recipients is None) == (self.group_id is None):
            raise ValueError("give either 'recipients' or 'group_id'")
        if self.template is not None:
            if self.html is not None or self.text is not None:
                raise ValueError("give either 'template' or 'html' (and 'text'), not both")
        elif self.html is None or self.subject is None:
            raise ValueError("give 'subject' and 'html', or a 'template'")
        if self.sender is None and self.message_type is None:
            raise ValueError("give 'sender' or a 'message_type' to route by")
        if self.scheduled_at is not None and self.scheduled_at.tzinfo is None:
            raise ValueError("'scheduled_at' needs a timezone (e.g. 2026-12-01T09:00:00Z)")
        return self


class SendRequested(SendSpec, Event):
    """Another system asks for a send over RabbitMQ (exchange `mailer.events`, routing key
    `send.requested`). `system` names the calling system (as on its API keys, whose sender
    scope and routing rules apply); `idempotency_key` makes a repeat harmless: the same key with
    the same fields is the same send, with other fields it is rejected. The answer is
    `send.accepted` or `send.rejected` carrying both."""

    routing_key: ClassVar[str] = "send.requested"

    system: str = Field(min_length=1, max_length=100)
    idempotency_key: str = Field(min_length=1, max_length=200)


class SendAccepted(Event):
    """A send request became an API campaign (`send_id` is its public id); a repeat of an
    accepted request is accepted again with the same ids."""

    routing_key: ClassVar[str] = "send.accepted"

    system: str
    idempotency_key: str
    send_id: UUID
    campaign_id: int
    sender: str
    scheduled_at: datetime | None = None


class SendRejected(Event):
    """A send request was refused; nothing was created. `code`: invalid (a field, template or
    recipient), unknown_sender, unknown_route, forbidden_sender, unverified_sender, unknown_group,
    unknown_template, idempotency_conflict, unknown_system."""

    routing_key: ClassVar[str] = "send.rejected"

    system: str
    idempotency_key: str
    code: str
    reason: str


class TestSendRequested(Message):
    """Command (request/reply to sender's `sender.test-send` queue): send one test message through
    this account's transport and answer with a `TestSendOutcome`. The connection is the one
    `AccountConfigured` carries (secrets encrypted)."""

    __test__ = False  # not a pytest class

    account: AccountConfigured
    sender: SenderIdentity
    to: EmailStr
    subject: str = Field(max_length=998)
    text: str = Field(max_length=100_000)


class TestSendOutcome(BaseModel):
    """The outcome of a test send: `ok`, the provider's message id, and what the server said at
    each step of the SMTP conversation (or the SES call)."""

    __test__ = False

    ok: bool
    provider_message_id: str | None = None
    error: str | None = None
    transcript: list[str] = Field(default_factory=list)
