"""SES feedback notifications (Bounce, Complaint, Delivery) as SNS carries them.

Both SES notification flavours are read: identity notifications name their kind in
`notificationType`, configuration-set event publishing in `eventType`. Only the fields we use
are modelled; SES adds fields over time and they are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.bounce.sns import Malformed
from shared.contracts.headers import CAMPAIGN_ID_HEADER, DELIVERY_ID_HEADER


class _Ses(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Header(_Ses):
    name: str
    value: str


class _Mail(_Ses):
    messageId: str = Field(min_length=1)
    headers: list[_Header] = Field(default_factory=list)


class _BouncedRecipient(_Ses):
    emailAddress: str
    diagnosticCode: str = ""


class _Bounce(_Ses):
    bounceType: Literal["Permanent", "Transient", "Undetermined"]
    bounceSubType: str = ""
    bouncedRecipients: list[_BouncedRecipient] = Field(min_length=1)
    timestamp: datetime


class _ComplainedRecipient(_Ses):
    emailAddress: str


class _Complaint(_Ses):
    complainedRecipients: list[_ComplainedRecipient] = Field(min_length=1)
    complaintFeedbackType: str = ""
    timestamp: datetime


class _Delivery(_Ses):
    recipients: list[str] = Field(min_length=1)
    timestamp: datetime


class _Notification(_Ses):
    mail: _Mail
    bounce: _Bounce | None = None
    complaint: _Complaint | None = None
    delivery: _Delivery | None = None


Kind = Literal["bounce", "complaint", "delivery"]


@dataclass(frozen=True)
class Recipient:
    """One address the notification is about, with the receiving server's words for a bounce."""

    email: str
    diagnostic: str = ""


@dataclass(frozen=True)
class Feedback:
    """What a notification says: its kind, about which message, for which recipients, when.

    `bounce_type` is SES's Permanent / Transient / Undetermined; `subtype` its bounceSubType or,
    for a complaint, the complaintFeedbackType.
    """

    kind: Kind
    provider_message_id: str
    headers: dict[str, str]
    recipients: tuple[Recipient, ...]
    occurred_at: datetime
    bounce_type: str = ""
    subtype: str = ""

    def delivery_ids(self) -> tuple[int, int] | None:
        """(campaign id, recipient id) from our X-Mailer headers, if the message carried them."""
        value = self.headers.get(DELIVERY_ID_HEADER.lower(), "")
        campaign, _, recipient = value.partition(".")
        if not (campaign.isdigit() and recipient.isdigit()):
            return None
        if self.headers.get(CAMPAIGN_ID_HEADER.lower(), campaign) != campaign:
            return None
        return int(campaign), int(recipient)


def _kind(document: dict[str, Any]) -> Kind:
    kind = document.get("notificationType", document.get("eventType"))
    if kind not in ("Bounce", "Complaint", "Delivery"):
        raise Malformed("unknown SES notification type")
    lowered: Kind = kind.lower()
    return lowered


def parse_notification(payload: str | dict[str, Any]) -> Feedback:
    """The feedback in an SES notification (JSON text, or already decoded as moto's SQS fan-out
    delivers it); Malformed if it is not a Bounce, Complaint or Delivery notification."""
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except (json.JSONDecodeError, RecursionError):
            raise Malformed("SES notification is not JSON") from None
    if not isinstance(payload, dict):
        raise Malformed("SES notification is not a JSON object")
    kind = _kind(payload)
    try:
        notification = _Notification.model_validate(payload)
    except ValidationError as exc:
        raise Malformed(f"SES notification invalid: {exc.errors()[0]['loc']}") from None
    mail = notification.mail
    bounce_type = subtype = ""
    if kind == "bounce" and notification.bounce is not None:
        bounce = notification.bounce
        recipients = tuple(Recipient(r.emailAddress, r.diagnosticCode) for r in bounce.bouncedRecipients)
        occurred_at, bounce_type, subtype = bounce.timestamp, bounce.bounceType, bounce.bounceSubType
    elif kind == "complaint" and notification.complaint is not None:
        complaint = notification.complaint
        recipients = tuple(Recipient(r.emailAddress) for r in complaint.complainedRecipients)
        occurred_at, subtype = complaint.timestamp, complaint.complaintFeedbackType
    elif kind == "delivery" and notification.delivery is not None:
        recipients = tuple(Recipient(r) for r in notification.delivery.recipients)
        occurred_at = notification.delivery.timestamp
    else:
        raise Malformed(f"SES {kind} notification without its {kind} object")
    return Feedback(
        kind,
        provider_message_id=mail.messageId,
        headers={header.name.lower(): header.value for header in mail.headers},
        recipients=recipients,
        occurred_at=occurred_at,
        bounce_type=bounce_type,
        subtype=subtype,
    )
