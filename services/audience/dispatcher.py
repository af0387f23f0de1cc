"""Queues resolved campaigns to their sending account, batch by batch, from a checkpoint.

One dispatcher runs at a time (advisory lock) and finishes the oldest resolved campaign before
the next, so a campaign's batches are contiguous in its account's queue. A few batches of one
campaign are published together (in order, on one channel, their confirms awaited together)
before the checkpoint moves in the same transaction: a crash re-publishes at most those
batches, which the sender's delivery ledger absorbs.
"""

from __future__ import annotations

import asyncio

from services.audience import repository as audience_repo
from shared.broker import declare_account_queue
from shared.contracts import SendBatch, topology
from shared.pump import Pump
from shared.service import Runtime
from shared.telemetry import resumed_trace


class Dispatcher:
    """Publishes SendBatch commands for resolved campaigns."""

    def __init__(self, batch_size: int, batches_per_checkpoint: int = 1) -> None:
        self._runtime: Runtime | None = None
        self._batch_size = batch_size
        self._batches_per_checkpoint = batches_per_checkpoint
        self._declared: set[int] = set()
        self._pump = Pump(self.dispatch_one_batch, "audience dispatcher")

    def notify(self) -> None:
        """A campaign was resolved: queue it now."""
        self._pump.notify()

    async def run(self, runtime: Runtime) -> None:
        """Dispatch until cancelled (waits for the broker first)."""
        self._runtime = runtime
        await runtime.broker_started.wait()
        await self._pump.run()

    async def dispatch_one_batch(self) -> bool:
        """Publish the next batches of the oldest pending campaign, up to one checkpoint's worth;
        False when there is none."""
        assert self._runtime is not None, "run() sets the runtime"
        async with self._runtime.pool.acquire() as conn, conn.transaction():
            resolutions = audience_repo.ResolutionRepository(conn)
            if not await resolutions.lock_dispatch():
                return False
            pending = await resolutions.next_pending()
            if pending is None:
                return False
            recipients = await resolutions.batch(
                pending.campaign_id, pending.dispatched_upto, self._batch_size * self._batches_per_checkpoint
            )
            await self._declare(pending.account_id)
            # Tasks start in order and take the channel's (FIFO) lock in that order to write
            # their frames, so the batches reach the queue in recipient order while their
            # confirms overlap.
            await asyncio.gather(
                *(
                    self._publish(
                        pending.account_id,
                        pending.priority,
                        pending.trace_headers,
                        SendBatch(
                            campaign_id=pending.campaign_id,
                            account_id=pending.account_id,
                            recipients=recipients[start : start + self._batch_size],
                        ),
                    )
                    for start in range(0, len(recipients), self._batch_size)
                )
            )
            await resolutions.advance(
                pending.campaign_id, recipients[-1].recipient_id if recipients else pending.included
            )
        return True

    async def _declare(self, account_id: int) -> None:
        assert self._runtime is not None
        if account_id not in self._declared:
            # The sender may never have run for this account: the queue must exist to hold the batch.
            await declare_account_queue(self._runtime.broker, account_id)
            self._declared.add(account_id)

    async def _publish(self, account_id: int, priority: int, trace: dict[str, str], batch: SendBatch) -> None:
        assert self._runtime is not None
        with resumed_trace(trace):
            await self._runtime.broker.publish(
                batch,
                exchange=topology.SEND.name,
                routing_key=topology.account_routing_key(account_id),
                priority=priority,
                message_id=str(batch.event_id),
                persist=True,
            )
