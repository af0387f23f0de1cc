"""The delivery ledger as a batch's workers write it: claims and outcomes coalesced.

The workers of a batch claim and finish deliveries concurrently. Each request joins the next
transaction, which waits a couple of milliseconds for the others (group commit): one round trip
and one commit serve several messages under load, for a delay no sending rate notices.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.sender import repository as sender_repo
from shared import outbox
from shared.contracts import Event, Recipient, SendBatch
from shared.service import Runtime

Item = TypeVar("Item")
Result = TypeVar("Result")


# How long a transaction waits for more requests to join it. Sends in flight end about
# (SMTP round trip / connections) apart: ~0.4 ms with 10 connections to a local server.
LINGER_SECONDS = 0.002


class Coalescer(Generic[Item, Result]):
    """Runs `flush` on the items submitted within `linger` seconds of each other, or while the
    previous flush was running."""

    def __init__(
        self, flush: Callable[[list[Item]], Awaitable[list[Result]]], linger: float = LINGER_SECONDS
    ) -> None:
        self._flush = flush
        self._linger = linger
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushing = False
        # The running flush; held so that the event loop's weak reference is not the only one.
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """The result of `item` once the transaction that carries it is done."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._flushing:
            self._flushing = True
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(self._linger)
            while self._pending:
                taken, self._pending = self._pending, []
                try:
                    results = await self._flush([item for item, _ in taken])
                except Exception as exc:
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(taken, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._flushing = False


@dataclass(frozen=True)
class Outcome:
    """A delivery's outcome and the event that announces it."""

    recipient: Recipient
    status: str
    provider_message_id: str | None
    reason: str | None
    event: Event


class Ledger:
    """Claims and outcomes of one batch's deliveries, written by this process (`claimer`)."""

    def __init__(self, runtime: Runtime, batch: SendBatch, claimer: str) -> None:
        self._runtime = runtime
        self._batch = batch
        self._claimer = claimer
        self._claims = Coalescer(self._claim_all)
        self._outcomes = Coalescer(self._finish_all)

    async def claim(self, recipient: Recipient) -> sender_repo.Claim:
        """Record that this process sends to the recipient now, or say who did before."""
        return await self._claims.submit(recipient)

    async def finish(self, outcome: Outcome) -> bool:
        """Complete a claimed delivery and queue its event; False if it was no longer in flight
        (another process judged it indeterminate meanwhile, and reported that)."""
        return await self._outcomes.submit(outcome)

    async def _claim_all(self, recipients: list[Recipient]) -> list[sender_repo.Claim]:
        batch = self._batch
        async with self._runtime.transaction() as conn:
            claims = await sender_repo.DeliveryRepository(conn).claim_many(
                batch.campaign_id, batch.account_id, self._claimer, recipients
            )
        return [claims[r.recipient_id] for r in recipients]

    async def _finish_all(self, outcomes: list[Outcome]) -> list[bool]:
        async with self._runtime.transaction() as conn:
            finished = await sender_repo.DeliveryRepository(conn).finish_many(
                self._batch.campaign_id,
                [(o.recipient.recipient_id, o.status, o.provider_message_id, o.reason) for o in outcomes],
            )
            await outbox.add_events(conn, [o.event for o in outcomes if o.recipient.recipient_id in finished])
        return [o.recipient.recipient_id in finished for o in outcomes]
