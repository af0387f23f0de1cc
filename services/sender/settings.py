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
