"""What stops sending before the next message: paused or cancelled campaigns, and the batches
running now, so that a pause reaches the one in progress at once.

The state of record is sender's database (written by the control handlers); this is the copy
each replica checks before every message, kept current by the per-replica control queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Halt(StrEnum):
    """Why a running batch stops taking recipients."""

    ACCOUNT_PAUSED = "account paused"
    ACCOUNT_HELD = "account held"
    CAMPAIGN_PAUSED = "campaign paused"
    RETRY = "transient failure"
    CONNECTION_LOST = "broker channel closed"


@dataclass(eq=False)
class RunningBatch:
    """One SendBatch being sent: its workers stop before their next message once `halted`."""

    campaign_id: int
    account_id: int
    recipients: frozenset[int] = frozenset()
    reason: Halt | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def halt(self, reason: Halt) -> None:
        """Stop before the next message (the first reason is kept)."""
        if self.reason is None:
            self.reason = reason
        self.stopped.set()


class Control:
    """Paused and cancelled campaigns, and the running batches a pause must reach."""

    def __init__(self) -> None:
        self._paused: set[int] = set()
        self._cancelled: set[int] = set()
        self._running: set[RunningBatch] = set()

    def load(self, paused: set[int], cancelled: set[int]) -> None:
        """The state read from the database when the sender starts."""
        self._paused, self._cancelled = set(paused), set(cancelled)

    def is_paused(self, campaign_id: int) -> bool:
        """Whether the campaign is paused."""
        return campaign_id in self._paused

    def is_cancelled(self, campaign_id: int) -> bool:
        """Whether the campaign is cancelled: its unsent recipients are skipped."""
        return campaign_id in self._cancelled

    def set_campaign_paused(self, campaign_id: int, paused: bool) -> None:
        """Pause (stopping its running batches now) or resume a campaign."""
        if paused:
            self._paused.add(campaign_id)
            self._halt(lambda batch: batch.campaign_id == campaign_id, Halt.CAMPAIGN_PAUSED)
        else:
            self._paused.discard(campaign_id)

    def cancel(self, campaign_id: int) -> None:
        """Cancel a campaign: its running batches skip what they have not sent."""
        self._cancelled.add(campaign_id)

    def halt_account(self, account_id: int, reason: Halt) -> None:
        """Stop the account's running batches before their next message."""
        self._halt(lambda batch: batch.account_id == account_id, reason)

    def begin(self, campaign_id: int, account_id: int, recipients: Iterable[int] = ()) -> RunningBatch:
        """Register a batch that starts sending."""
        batch = RunningBatch(campaign_id, account_id, frozenset(recipients))
        self._running.add(batch)
        return batch

    def sending_elsewhere(self, batch: RunningBatch, recipient_id: int) -> bool:
        """Whether another running batch of this process may be sending to the recipient (the
        same batch delivered twice at once). If none is, a claim of this process on it was left
        by an attempt that failed half-way (database or broker gone), not by one in flight."""
        return any(
            other is not batch and other.campaign_id == batch.campaign_id and recipient_id in other.recipients
            for other in self._running
        )

    def end(self, batch: RunningBatch) -> None:
        """The batch is no longer sending."""
        self._running.discard(batch)

    def _halt(self, matches: Callable[[RunningBatch], bool], reason: Halt) -> None:
        for batch in self._running:
            if matches(batch):
                batch.halt(reason)
