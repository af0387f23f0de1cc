"""When feedback puts an address on the shared suppression list.

A permanent bounce or a complaint suppresses at once, for every account: sending there again
only hurts each account's reputation. A transient bounce (mailbox full, greylisting) says
nothing lasting on its own, so it suppresses only once the address has had `limit` of them
within the window. An undetermined bounce and a delivery never suppress.
"""

from __future__ import annotations

from typing import Literal

from services.bounce.notifications import Feedback

Reason = Literal["bounce", "complaint", "soft_bounce"]


def normalise(email: str) -> str:
    """The list's key of an address: one address, one entry, whatever its case."""
    return email.strip().lower()


def counts_as_soft_bounce(feedback: Feedback) -> bool:
    """A transient bounce, which counts towards the soft-bounce limit."""
    return feedback.kind == "bounce" and feedback.bounce_type == "Transient"


def reason_to_suppress(feedback: Feedback, soft_bounces: int, limit: int) -> Reason | None:
    """Why this feedback suppresses its recipient, or None; `soft_bounces` are the address's
    transient bounces within the window, this one included."""
    if feedback.kind == "complaint":
        return "complaint"
    if feedback.kind == "bounce" and feedback.bounce_type == "Permanent":
        return "bounce"
    if counts_as_soft_bounce(feedback) and soft_bounces >= limit:
        return "soft_bounce"
    return None
