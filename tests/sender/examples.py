"""Example contracts for the sender tests, with ids unique to each call.

The database and vhost are shared by the whole test run, so every account and campaign gets a
fresh random id.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

from shared.contracts import (
    AccountConfigured,
    CampaignStarted,
    Recipient,
    SendBatch,
    SenderIdentity,
    SmtpConnection,
)

SENDER = SenderIdentity(name="Itaú Social", email="news@mailer.example")


def unique_id() -> int:
    """An id no other test of the run uses (fits PostgreSQL's integer)."""
    return random.randint(1_000_000, 2_000_000_000)


def an_account(
    account_id: int | None = None,
    *,
    active: bool = True,
    rate_per_second: float = 1000.0,
    max_connections: int = 3,
    occurred_at: datetime | None = None,
) -> AccountConfigured:
    """An SMTP sending account; the rate is high so tests do not wait on the throttle."""
    extra: dict[str, Any] = {} if occurred_at is None else {"occurred_at": occurred_at}
    return AccountConfigured(
        account_id=account_id or unique_id(),
        name="Test account",
        transport="smtp",
        smtp=SmtpConnection(host="127.0.0.1", port=2525, security="none"),
        rate_per_second=rate_per_second,
        max_connections=max_connections,
        active=active,
        **extra,
    )


def a_campaign(
    account_id: int,
    campaign_id: int | None = None,
    *,
    subject: str = "Olá, {{ nome }}",
    html: str = "<html><body><p>Caro(a) <b>{{ nome }}</b>, seu e-mail é {{ email }}.</p></body></html>",
    text: str | None = None,
    sender: SenderIdentity = SENDER,
) -> CampaignStarted:
    """A started campaign with a personalised subject and body."""
    return CampaignStarted(
        campaign_id=campaign_id or unique_id(),
        account_id=account_id,
        sender=sender,
        subject=subject,
        html=html,
        text=text,
        group_ids=[1],
        priority=5,
    )


def a_recipient(
    recipient_id: int = 1, email: str | None = None, name: str = "Ana Souza", **fields: str
) -> Recipient:
    """A recipient; its address is unique to the test unless given."""
    return Recipient(
        recipient_id=recipient_id,
        email=email or f"r{recipient_id}.{unique_id()}@example.com",
        name=name,
        fields=fields,
    )


def a_batch(campaign: CampaignStarted, recipients: list[Recipient]) -> SendBatch:
    """The SendBatch of these recipients of the campaign."""
    return SendBatch(campaign_id=campaign.campaign_id, account_id=campaign.account_id, recipients=recipients)
