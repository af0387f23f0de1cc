"""What the campaign API accepts and returns, and the rows its repository hands back."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from services.campaign.lifecycle import Status

_Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)

# "full": opens and clicks per recipient; "anonymous": counted without recipient; "off": none.
Tracking = Literal["full", "anonymous", "off"]
# What a results page may be filtered by: an outcome, or what the recipient did.
ResultStatus = Literal[
    "sent",
    "failed",
    "skipped",
    "indeterminate",
    "read",
    "unread",
    "clicked",
    "unsubscribed",
    "unsubscribed_campaign",
    "unsubscribed_all",
    "bounced",
    "complained",
]


class SmtpIn(BaseModel):
    """SMTP server of a sending account; the password is write-only."""

    model_config = _Strict

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, max_length=1024)


class SesIn(BaseModel):
    """Amazon SES account; the secret key is write-only."""

    model_config = _Strict

    region: str = Field(min_length=1, max_length=40)
    access_key_id: str = Field(min_length=1, max_length=128)
    secret_access_key: str = Field(min_length=1, max_length=1024)
    endpoint_url: str | None = Field(default=None, max_length=255)


class WarmupIn(BaseModel):
    """The warm-up ramp of a new account: `start_per_day` on `started_on`, growing each day."""

    model_config = _Strict

    started_on: date = Field(default_factory=date.today)
    start_per_day: int = Field(ge=1, le=10_000_000)
    growth_per_day: float = Field(default=1.5, gt=1, le=10)


class AccountIn(BaseModel):
    """A new sending account."""

    model_config = _Strict

    name: str = Field(min_length=1, max_length=200)
    transport: Literal["smtp", "ses"]
    smtp: SmtpIn | None = None
    ses: SesIn | None = None
    rate_per_second: float = Field(default=10.0, gt=0, le=10_000)
    active: bool = True
    daily_quota: int | None = Field(default=None, ge=1, le=100_000_000)
    warmup: WarmupIn | None = None
    use_provider_limits: bool = True
    max_connections: int = Field(default=3, ge=1, le=50)
    # The reputation brake (bounce's): SES's own CloudWatch rates judge an SES account with
    # `bounce_control`; thresholds are fractions; a pause lasts `pause_hours`.
    bounce_control: bool = False
    bounce_threshold: float = Field(default=0.05, gt=0, le=1)
    complaint_threshold: float = Field(default=0.001, gt=0, le=1)
    pause_hours: float = Field(default=24, gt=0, le=24 * 30)

    @model_validator(mode="after")
    def _transport_settings_present(self) -> AccountIn:
        if self.transport == "smtp" and self.smtp is None:
            raise ValueError("an smtp account needs its 'smtp' settings")
        if self.transport == "ses" and self.ses is None:
            raise ValueError("an ses account needs its 'ses' settings")
        return self


class AccountState(BaseModel):
    """How an account may send, and what its senders last reported (stored and shown alike)."""

    rate_per_second: float
    active: bool
    daily_quota: int | None
    warmup_started_on: date | None
    warmup_start_per_day: int | None
    warmup_growth_per_day: float | None
    use_provider_limits: bool
    max_connections: int
    bounce_control: bool
    bounce_threshold: float
    complaint_threshold: float
    pause_hours: float
    paused: bool
    pause_reason: str | None
    paused_until: datetime | None
    held_reason: str | None
    held_until: datetime | None


class Account(AccountState):
    """A sending account as stored (secrets encrypted)."""

    account_id: int
    name: str
    transport: Literal["smtp", "ses"]
    smtp_host: str | None
    smtp_port: int | None
    smtp_security: Literal["starttls", "tls", "none"] | None
    smtp_username: str | None
    smtp_password_encrypted: str | None
    ses_region: str | None
    ses_access_key_id: str | None
    ses_secret_access_key_encrypted: str | None
    ses_endpoint_url: str | None
    created_at: datetime
    updated_at: datetime


class AccountOut(AccountState):
    """A sending account as the API shows it: secrets never leave, only whether they are set."""

    account_id: int
    name: str
    transport: Literal["smtp", "ses"]
    smtp_host: str | None
    smtp_port: int | None
    smtp_security: str | None
    smtp_username: str | None
    has_password: bool
    ses_region: str | None
    created_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountOut:
        """The public view of a stored account."""
        return cls(
            **account.model_dump(include=set(cls.model_fields) - {"has_password"}),
            has_password=bool(account.smtp_password_encrypted or account.ses_secret_access_key_encrypted),
        )


class AccountChange(BaseModel):
    """What an edit of a sending account may change; omitted fields stay as they are. New SMTP
    or SES settings replace the old ones (an omitted SMTP password keeps the stored one)."""

    model_config = _Strict

    rate_per_second: float | None = Field(default=None, gt=0, le=10_000)
    active: bool | None = None
    smtp: SmtpIn | None = None
    ses: SesIn | None = None
    daily_quota: int | None = Field(default=None, ge=1, le=100_000_000)
    warmup: WarmupIn | None = None
    use_provider_limits: bool | None = None
    max_connections: int | None = Field(default=None, ge=1, le=50)
    bounce_control: bool | None = None
    bounce_threshold: float | None = Field(default=None, gt=0, le=1)
    complaint_threshold: float | None = Field(default=None, gt=0, le=1)
    pause_hours: float | None = Field(default=None, gt=0, le=24 * 30)


class SenderAddressIn(BaseModel):
    """A From identity on a sending account."""

    model_config = _Strict

    account_id: int
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    reply_to: EmailStr | None = None


class SenderAddress(BaseModel):
    """A stored sender address."""

    sender_address_id: int
    account_id: int
    name: str
    email: str
    reply_to: str | None
    created_at: datetime


class CampaignIn(BaseModel):
    """A new campaign (a draft until started)."""

    model_config = _Strict

    name: str = Field(min_length=1, max_length=300)
    sender_address_id: int
    group_ids: list[int] = Field(min_length=1, max_length=50)
    subject: str = Field(min_length=1, max_length=998)  # RFC 5322 line limit
    html: str = Field(min_length=1, max_length=2_000_000)
    text: str | None = Field(default=None, max_length=2_000_000)
    priority: int = Field(default=5, ge=0, le=9)
    tracking: Tracking = "full"

    @model_validator(mode="after")
    def _no_repeated_group(self) -> CampaignIn:
        if len(set(self.group_ids)) != len(self.group_ids):
            raise ValueError("group_ids repeats a group")
        return self


class CampaignChange(BaseModel):
    """What an edit of a draft campaign may change; omitted fields stay as they are (`text`
    given as null removes the text alternative)."""

    model_config = _Strict

    name: str | None = Field(default=None, min_length=1, max_length=300)
    subject: str | None = Field(default=None, min_length=1, max_length=998)
    html: str | None = Field(default=None, min_length=1, max_length=2_000_000)
    text: str | None = Field(default=None, max_length=2_000_000)
    priority: int | None = Field(default=None, ge=0, le=9)
    tracking: Tracking | None = None


class AccountPauseIn(BaseModel):
    """Why an operator pauses or resumes an account (kept in the logs and the event)."""

    reason: str = Field(default="operator", min_length=1, max_length=500)


class Campaign(BaseModel):
    """A stored campaign with its totals."""

    campaign_id: int
    name: str
    sender_address_id: int
    subject: str
    html: str
    text_body: str | None
    priority: int
    origin: str
    status: Status
    failure_reason: str | None
    recipients: int | None
    sent: int
    failed: int
    skipped: int
    indeterminate: int
    tracking: Tracking
    read: int
    opens: int
    machine_opens: int
    unique_clicks: int
    total_clicks: int
    machine_clicks: int
    unsubscribed: int
    unsubscribed_campaign: int
    unsubscribed_all: int
    bounced: int
    complained: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    group_ids: list[int]

    @property
    def remaining(self) -> int | None:
        """Recipients still without an outcome (unknown before audience resolved the groups)."""
        if self.recipients is None:
            return None
        return max(self.recipients - self.sent - self.failed - self.skipped - self.indeterminate, 0)


class Totals(BaseModel):
    """The totals of the results screen ("Total de destinatários", "Enviados", "Total restante",
    "Lidos", "Cancelados", "Bounces", "Erros", "Clicks únicos", "Clicks totais"), kept as
    counters. `read`: recipients with a read date (a person's open); `unique_clicks`: recipients
    who clicked at least once; `total_clicks`/`opens`: every human click/open, anonymous ones
    included; `unsubscribed`: recipients unsubscribed in either scope; machine ones apart."""

    recipients: int | None
    sent: int
    remaining: int | None
    read: int
    unsubscribed: int
    unsubscribed_campaign: int
    unsubscribed_all: int
    bounces: int
    complaints: int
    errors: int
    skipped: int
    indeterminate: int
    unique_clicks: int
    total_clicks: int
    opens: int
    machine_opens: int
    machine_clicks: int

    @classmethod
    def of(cls, campaign: Campaign) -> Totals:
        """The totals of a stored campaign."""
        return cls(
            **campaign.model_dump(
                include={
                    "recipients",
                    "sent",
                    "read",
                    "unsubscribed",
                    "unsubscribed_campaign",
                    "unsubscribed_all",
                    "skipped",
                    "indeterminate",
                    "unique_clicks",
                    "total_clicks",
                    "opens",
                    "machine_opens",
                    "machine_clicks",
                }
            ),
            remaining=campaign.remaining,
            bounces=campaign.bounced,
            complaints=campaign.complained,
            errors=campaign.failed,
        )


class CampaignOut(BaseModel):
    """A campaign as the API shows it, with its totals and what remains to send."""

    campaign_id: int
    name: str
    sender_address_id: int
    group_ids: list[int]
    subject: str
    priority: int
    origin: str
    status: Status
    failure_reason: str | None
    recipients: int | None
    sent: int
    failed: int
    skipped: int
    indeterminate: int
    remaining: int | None
    tracking: Tracking
    totals: Totals
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, campaign: Campaign) -> CampaignOut:
        """The public view of a stored campaign."""
        return cls(
            **campaign.model_dump(include=set(cls.model_fields)),
            remaining=campaign.remaining,
            totals=Totals.of(campaign),
        )


class Result(BaseModel):
    """The outcome for one recipient of a campaign and what the recipient did with it.
    `opened_at` is the read date; `urls` the links the recipient followed (first click order)."""

    recipient_id: int
    email: str
    name: str
    status: Literal["sent", "failed", "skipped", "indeterminate"]
    sent_at: datetime | None
    opened_at: datetime | None
    reason: str | None
    clicked_at: datetime | None
    clicks: int
    urls: list[str]
    unsubscribed_campaign_at: datetime | None
    unsubscribed_all_at: datetime | None
    unsubscribe_reason: str | None
    bounced_at: datetime | None
    bounce_kind: Literal["permanent", "transient", "undetermined"] | None
    bounce_subtype: str | None
    bounce_diagnostic: str | None
    complained_at: datetime | None


class ResultsPage(BaseModel):
    """A page of results with the campaign's totals; pass `next_after` as `after` to get the next."""

    totals: Totals
    items: list[Result]
    next_after: int | None


class LinkClicks(BaseModel):
    """One tracked link of a campaign: human clicks, distinct human clickers, machine clicks."""

    url: str
    clicks: int
    unique_clickers: int
    machine_clicks: int
