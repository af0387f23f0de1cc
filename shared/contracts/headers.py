"""Header names shared across services: in outgoing mail and in AMQP messages."""

from __future__ import annotations

# Mail headers: SES feedback and bounces carry them back to us.
CAMPAIGN_ID_HEADER = "X-Mailer-Campaign"
DELIVERY_ID_HEADER = "X-Mailer-Delivery"

# AMQP headers.
ATTEMPT_HEADER = "x-mailer-attempt"
FAILURE_REASON_HEADER = "x-mailer-failure-reason"
ORIGINAL_QUEUE_HEADER = "x-mailer-original-queue"
FAILED_AT_HEADER = "x-mailer-failed-at"


def delivery_id(campaign_id: int, recipient_id: int) -> str:
    """The value of DELIVERY_ID_HEADER: one message to one recipient of one campaign."""
    return f"{campaign_id}.{recipient_id}"
