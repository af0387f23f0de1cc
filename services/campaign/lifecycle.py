"""The states of a campaign and which operator actions are legal in each.

draft → queued (started) → sending (recipients resolved) → completed (every recipient has an
outcome); paused from queued or sending, and back to where it was when resumed; cancelled from
any unfinished state; failed when it cannot be sent at all.
"""

from __future__ import annotations

from enum import StrEnum

from shared.errors import Conflict


class Status(StrEnum):
    """Campaign status as stored and shown (the console translates it)."""

    DRAFT = "draft"
    QUEUED = "queued"
    SENDING = "sending"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINISHED = frozenset({Status.COMPLETED, Status.CANCELLED, Status.FAILED})

# action -> (states it is allowed from, state it leads to)
_ACTIONS: dict[str, tuple[frozenset[Status], Status]] = {
    "start": (frozenset({Status.DRAFT}), Status.QUEUED),
    "pause": (frozenset({Status.QUEUED, Status.SENDING}), Status.PAUSED),
    # Resuming goes back to queued or sending (the repository knows which): SENDING stands for both.
    "resume": (frozenset({Status.PAUSED}), Status.SENDING),
    "cancel": (frozenset({Status.DRAFT, Status.QUEUED, Status.SENDING, Status.PAUSED}), Status.CANCELLED),
}


def after(action: str, current: Status) -> Status:
    """The status an operator action leads to; raises Conflict when it is illegal now."""
    allowed, target = _ACTIONS[action]
    if current not in allowed:
        raise Conflict(f"cannot {action} a campaign that is {current.value}")
    return target
