"""The dispatcher of the running audience service: resolved campaigns go to their account's queue
in checkpointed, contiguous batches."""

from __future__ import annotations

import uuid

import aio_pika
import pytest

from services.audience.repository import ResolutionRepository
from shared.broker import declare_account_queue
from shared.contracts import SendBatch, topology
from tests.audience.support import BATCH_SIZE, Audience, collect, stage_and_finish, take, waiting
from tests.support import unique_id

pytestmark = pytest.mark.connected

Channel = aio_pika.abc.AbstractChannel
Queue = aio_pika.abc.AbstractQueue


async def _account_queue(audience: Audience, channel: Channel, account_id: int) -> Queue:
    await declare_account_queue(audience.runtime.broker, account_id)
    return await channel.declare_queue(topology.account_queue(account_id).name, passive=True)


async def _resolve(
    audience: Audience, account_id: int, emails: list[str], priority: int = 0, checkpoint: int = 0
) -> int:
    """Commit a resolved campaign of these recipients (optionally already dispatched up to `checkpoint`)."""
    campaign_id = unique_id()
    group_id = await audience.create_group(f"group-{uuid.uuid4().hex[:12]}", emails)
    async with audience.runtime.transaction() as conn:
        await stage_and_finish(conn, campaign_id, account_id, priority, [group_id])
        if checkpoint:
            await ResolutionRepository(conn).advance(campaign_id, checkpoint)
    audience.dispatcher.notify()
    return campaign_id


def _emails(count: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"r{i}.{tag}@example.com" for i in range(1, count + 1)]


class TestDispatchOneBatch:
    async def test_queues_a_campaign_in_batches_in_order_with_its_priority(
        self, audience: Audience, channel: Channel
    ) -> None:
        account_id = unique_id()
        queue = await _account_queue(audience, channel, account_id)
        emails = _emails(5)

        campaign_id = await _resolve(audience, account_id, emails, priority=4)

        resolution = await audience.dispatched(campaign_id)
        assert (resolution["dispatched_upto"], resolution["included"]) == (5, 5)
        assert resolution["dispatched_at"] is not None
        messages = await collect(queue, lambda ms: len(ms) >= 3)
        assert await take(queue, []) == []
        batches = [SendBatch.model_validate_json(m.body) for m in messages]
        assert [len(b.recipients) for b in batches] == [BATCH_SIZE, BATCH_SIZE, 1]
        assert [(r.recipient_id, r.email) for b in batches for r in b.recipients] == list(
            enumerate(emails, start=1)
        )
        assert {(b.campaign_id, b.account_id) for b in batches} == {(campaign_id, account_id)}
        assert [m.priority for m in messages] == [4, 4, 4]
        assert len({b.event_id for b in batches}) == 3

    async def test_goes_on_from_the_checkpoint(self, audience: Audience, channel: Channel) -> None:
        account_id = unique_id()
        queue = await _account_queue(audience, channel, account_id)

        campaign_id = await _resolve(audience, account_id, _emails(5), checkpoint=3)

        assert (await audience.dispatched(campaign_id))["dispatched_upto"] == 5
        messages = await collect(queue, lambda ms: len(ms) >= 1)
        assert await take(queue, []) == []
        [batch] = [SendBatch.model_validate_json(m.body) for m in messages]
        assert [r.recipient_id for r in batch.recipients] == [4, 5]

    async def test_campaigns_of_one_account_are_queued_one_after_the_other(
        self, audience: Audience, channel: Channel
    ) -> None:
        account_id = unique_id()
        queue = await _account_queue(audience, channel, account_id)
        first_group = await audience.create_group(f"group-{uuid.uuid4().hex[:12]}", _emails(4))
        second_group = await audience.create_group(f"group-{uuid.uuid4().hex[:12]}", _emails(4))
        first, second = sorted((unique_id(), unique_id()))
        # Both pending at once: the dispatcher could interleave them, and must not.
        async with audience.runtime.transaction() as conn:
            await stage_and_finish(conn, second, account_id, 0, [second_group])
            await stage_and_finish(conn, first, account_id, 0, [first_group])
        audience.dispatcher.notify()

        await audience.dispatched(first)
        await audience.dispatched(second)

        messages = await collect(queue, lambda ms: len(ms) >= 4)
        campaigns = [SendBatch.model_validate_json(m.body).campaign_id for m in messages]
        assert campaigns == [first, first, second, second]

    async def test_a_campaign_without_recipients_is_marked_dispatched_and_queues_nothing(
        self, audience: Audience, channel: Channel
    ) -> None:
        account_id = unique_id()
        queue = await _account_queue(audience, channel, account_id)

        campaign_id = await _resolve(audience, account_id, [])

        assert (await audience.dispatched(campaign_id))["dispatched_upto"] == 0
        assert await waiting(channel, queue.name) == 0

    async def test_does_nothing_while_another_dispatcher_holds_the_lock(
        self, audience: Audience, channel: Channel
    ) -> None:
        account_id = unique_id()
        queue = await _account_queue(audience, channel, account_id)
        async with audience.runtime.pool.acquire() as holder:
            lock = holder.transaction()
            await lock.start()
            try:
                assert await ResolutionRepository(holder).lock_dispatch()
                campaign_id = await _resolve(audience, account_id, _emails(3))

                assert await audience.dispatcher.dispatch_one_batch() is False
                resolution = await audience.resolution(campaign_id)
                assert resolution is not None
                assert (resolution["status"], resolution["dispatched_upto"]) == ("resolved", 0)
                assert await waiting(channel, queue.name) == 0
            finally:
                await lock.rollback()
        audience.dispatcher.notify()

        assert (await audience.dispatched(campaign_id))["dispatched_upto"] == 3
        assert len(await collect(queue, lambda ms: len(ms) >= 2)) == 2

    async def test_reports_no_work_when_nothing_is_pending(self, audience: Audience) -> None:
        # Let the running dispatcher finish what earlier tests left, then ask for more.
        async with audience.runtime.pool.acquire() as conn:
            pending = await conn.fetch("SELECT campaign_id FROM resolutions WHERE status = 'resolved'")
        for row in pending:
            await audience.dispatched(row["campaign_id"])

        assert await audience.dispatcher.dispatch_one_batch() is False
