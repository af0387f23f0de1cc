"""Settings of the sender service."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class SenderSettings(ServiceSettings):
    """Sender: one consumer per active sending account, sending through its transport."""

    SERVICE_NAME: str = "sender"
    # SendBatch messages in flight per account consumer: one being sent, one ready behind it.
    ACCOUNT_PREFETCH: int = Field(default=2, ge=1, le=50)
    SMTP_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0)
    # A delivery left in flight by a sender that died may or may not have left: by default it is
    # reported indeterminate and not sent again (at most once); True sends it again (at least once).
    RESEND_INDETERMINATE: bool = False
    # An account that must wait longer than this (quota reached, provider throttling) stops its
    # consumer until then: a batch held unacknowledged for long would hit RabbitMQ's
    # consumer_timeout (30 min by default), which closes the channel.
    HOLD_CONSUMER_AFTER_SECONDS: float = Field(default=30.0, gt=0)
    # Domain of the List-Unsubscribe mailto address (unsubscribe+TOKEN@domain); unset: the
    # domain of each campaign's sender address.
    UNSUBSCRIBE_MAILTO_DOMAIN: str | None = None
