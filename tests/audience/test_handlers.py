"""A started campaign, published to the real vhost, becomes staged recipients, an event with the
counts, and SendBatch commands on its account's queue."""

from __future__ import annotations

import json
import uuid

import aio_pika
import pytest

from shared.broker import declare_account_queue, publish_event
from shared.contracts import (
    CampaignFailed,
    CampaignRecipientsResolved,
    CampaignStarted,
    SendBatch,
    headers,
    topology,
)
from tests.audience.support import (
    BATCH_SIZE,
    Audience,
    about,
    campaign_started,
    collect,
    listen_to_events,
    take,
    waiting,
)
from tests.support import eventually, unique_id

pytestmark = pytest.mark.connected

Channel = aio_pika.abc.AbstractChannel


async def _publish(audience: Audience, event: CampaignStarted) -> None:
    await publish_event(audience.runtime.broker, event)


async def _account_queue(audience: Audience, channel: Channel, account_id: int) -> aio_pika.abc.AbstractQueue:
    """The account's queue, declared as the sender would, so what lands there can be counted."""
    await declare_account_queue(audience.runtime.broker, account_id)
    return await channel.declare_queue(topology.account_queue(account_id).name, passive=True)


async def _outbox_flushed(audience: Audience, campaign_id: int) -> None:
    """Wait until the relay has published every event audience queued about the campaign."""

    async def flushed() -> bool:
        async with audience.runtime.pool.acquire() as conn:
            left = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE (convert_from(body, 'UTF8')::jsonb ->> 'campaign_id')::int = $1",
                campaign_id,
            )
        return int(left) == 0

    await eventually(flushed)


async def _remove_dead_letter(channel: Channel, message_id: str) -> bool:
    """Take one message out of the shared dead-letter queue, leaving the others in place."""
    queue = await channel.declare_queue(topology.DEAD_LETTER_QUEUE.name, passive=True)
    held: list[aio_pika.abc.AbstractIncomingMessage] = []
    try:
        while (message := await queue.get(fail=False)) is not None:
            if message.message_id == message_id:
                await message.ack()
                return True
            held.append(message)
        return False
    finally:
        for message in held:
            await message.nack(requeue=True)


def _group_name() -> str:
    return f"group-{uuid.uuid4().hex[:12]}"


class TestResolveCampaign:
    async def test_overlapping_groups_are_staged_once_in_group_order_counted_and_queued_in_batches(
        self, audience: Audience, channel: Channel
    ) -> None:
        first = await audience.create_group(
            _group_name(), ["ana@example.com", "bruno@example.net", "carla@example.org"]
        )
        second = await audience.create_group(
            _group_name(), ["Carla@EXAMPLE.org", "davi@example.com", "ANA@example.com", "eva@example.com"]
        )
        account_id = unique_id()
        account_queue = await _account_queue(audience, channel, account_id)
        events = await listen_to_events(
            channel, CampaignRecipientsResolved.routing_key, CampaignFailed.routing_key
        )
        started = campaign_started(account_id, [second, first], priority=7)
        campaign_id = started.campaign_id

        await _publish(audience, started)

        # Staged: the second group first (as the campaign lists it), each address once.
        expected = [
            (1, "Carla@example.org", "name of Carla@EXAMPLE.org"),
            (2, "davi@example.com", "name of davi@example.com"),
            (3, "ANA@example.com", "name of ANA@example.com"),
            (4, "eva@example.com", "name of eva@example.com"),
            (5, "bruno@example.net", "name of bruno@example.net"),
        ]
        received = await collect(events, lambda ms: bool(about(campaign_id, ms)))
        [message] = about(campaign_id, received)
        assert message.routing_key == CampaignRecipientsResolved.routing_key
        resolved = CampaignRecipientsResolved.model_validate_json(message.body)
        assert (resolved.account_id, resolved.included, resolved.duplicate) == (account_id, 5, 2)
        assert (resolved.invalid, resolved.suppressed, resolved.unsubscribed) == (0, 0, 0)
        assert await audience.staged(campaign_id) == expected

        resolution = await audience.dispatched(campaign_id)
        assert (resolution["included"], resolution["duplicate"], resolution["dispatched_upto"]) == (5, 2, 5)
        assert (resolution["account_id"], resolution["priority"]) == (account_id, 7)

        messages = await collect(account_queue, lambda ms: len(ms) >= 3)
        assert await take(account_queue, []) == []
        batches = [SendBatch.model_validate_json(m.body) for m in messages]
        assert [[r.recipient_id for r in b.recipients] for b in batches] == [[1, 2], [3, 4], [5]]
        assert all(len(b.recipients) <= BATCH_SIZE for b in batches)
        assert [(r.recipient_id, r.email, r.name) for b in batches for r in b.recipients] == expected
        assert {(b.campaign_id, b.account_id) for b in batches} == {(campaign_id, account_id)}
        assert [m.priority for m in messages] == [7, 7, 7]
        assert [m.message_id for m in messages] == [str(b.event_id) for b in batches]
        assert {m.delivery_mode for m in messages} == {aio_pika.DeliveryMode.PERSISTENT}

    async def test_a_missing_group_fails_the_campaign_naming_it_and_queues_nothing(
        self, audience: Audience, channel: Channel
    ) -> None:
        existing = await audience.create_group(_group_name(), ["ana@example.com"])
        missing = 2**31 - 7
        account_id = unique_id()
        account_queue = await _account_queue(audience, channel, account_id)
        events = await listen_to_events(
            channel, CampaignRecipientsResolved.routing_key, CampaignFailed.routing_key
        )
        started = campaign_started(account_id, [existing, missing])

        await _publish(audience, started)

        received = await collect(events, lambda ms: bool(about(started.campaign_id, ms)))
        await _outbox_flushed(audience, started.campaign_id)
        mine = about(started.campaign_id, await take(events, received))
        assert [m.routing_key for m in mine] == [CampaignFailed.routing_key]
        failed = CampaignFailed.model_validate_json(mine[0].body)
        assert failed.reason == f"grupo(s) não encontrado(s): {missing}"
        resolution = await audience.resolution(started.campaign_id)
        assert resolution is not None
        assert (resolution["status"], resolution["failure_reason"]) == ("failed", failed.reason)
        assert await audience.staged(started.campaign_id) == []
        assert await waiting(channel, account_queue.name) == 0

    async def test_the_same_event_delivered_twice_resolves_once(
        self, audience: Audience, channel: Channel
    ) -> None:
        group = await audience.create_group(
            _group_name(), ["a@example.com", "b@example.com", "c@example.com"]
        )
        account_id = unique_id()
        account_queue = await _account_queue(audience, channel, account_id)
        events = await listen_to_events(
            channel, CampaignRecipientsResolved.routing_key, CampaignFailed.routing_key
        )
        started = campaign_started(account_id, [group])

        await _publish(audience, started)
        await _publish(audience, started)

        assert await audience.handled.wait_for(str(started.event_id), times=2) == [None, None]
        await audience.dispatched(started.campaign_id)
        await _outbox_flushed(audience, started.campaign_id)
        mine = about(started.campaign_id, await take(events, []))
        assert [m.routing_key for m in mine] == [CampaignRecipientsResolved.routing_key]
        assert [r[0] for r in await audience.staged(started.campaign_id)] == [1, 2, 3]
        assert await waiting(channel, account_queue.name) == 2
        # The second delivery found the campaign resolved: it did not start the resolution over.
        resolution = await audience.resolution(started.campaign_id)
        assert resolution is not None
        assert resolution["attempts"] == 1

    async def test_the_same_campaign_started_again_under_a_new_event_id_resolves_once(
        self, audience: Audience, channel: Channel
    ) -> None:
        group = await audience.create_group(_group_name(), ["a@example.com", "b@example.com"])
        account_id = unique_id()
        account_queue = await _account_queue(audience, channel, account_id)
        events = await listen_to_events(
            channel, CampaignRecipientsResolved.routing_key, CampaignFailed.routing_key
        )
        started = campaign_started(account_id, [group])
        again = started.model_copy(update={"event_id": uuid.uuid4()})

        await _publish(audience, started)
        await _publish(audience, again)

        assert await audience.handled.wait_for(str(started.event_id)) == [None]
        assert await audience.handled.wait_for(str(again.event_id)) == [None]
        await audience.dispatched(started.campaign_id)
        await _outbox_flushed(audience, started.campaign_id)
        mine = about(started.campaign_id, await take(events, []))
        assert [m.routing_key for m in mine] == [CampaignRecipientsResolved.routing_key]
        assert await waiting(channel, account_queue.name) == 1

    async def test_an_empty_group_resolves_to_nobody_and_queues_nothing(
        self, audience: Audience, channel: Channel
    ) -> None:
        group = await audience.create_group(_group_name(), [])
        account_id = unique_id()
        account_queue = await _account_queue(audience, channel, account_id)
        events = await listen_to_events(
            channel, CampaignRecipientsResolved.routing_key, CampaignFailed.routing_key
        )
        started = campaign_started(account_id, [group])

        await _publish(audience, started)

        received = await collect(events, lambda ms: bool(about(started.campaign_id, ms)))
        [message] = about(started.campaign_id, received)
        resolved = CampaignRecipientsResolved.model_validate_json(message.body)
        assert (resolved.included, resolved.duplicate) == (0, 0)
        resolution = await audience.dispatched(started.campaign_id)
        assert resolution["dispatched_upto"] == 0
        assert await waiting(channel, account_queue.name) == 0

    async def test_an_event_of_an_unknown_schema_version_is_dead_lettered_untouched(
        self, audience: Audience, channel: Channel
    ) -> None:
        group = await audience.create_group(_group_name(), ["a@example.com"])
        started = campaign_started(unique_id(), [group])
        body = json.loads(started.model_dump_json()) | {"schema_version": 2}
        dead_letters = await channel.declare_queue(exclusive=True)
        await dead_letters.bind(
            topology.DEAD_LETTER.name, routing_key=topology.AUDIENCE_CAMPAIGN_STARTED.name
        )

        await audience.runtime.broker.publish(
            json.dumps(body).encode(),
            exchange=topology.EVENTS.name,
            routing_key=started.routing_key,
            message_id=str(started.event_id),
            content_type="application/json",
            persist=True,
        )

        try:
            [outcome] = await audience.handled.wait_for(str(started.event_id))
            assert outcome is not None
            assert "schema_version" in outcome
            [dead] = await collect(dead_letters, lambda ms: len(ms) >= 1)
            assert json.loads(dead.body)["campaign_id"] == started.campaign_id
            assert str(dead.headers[headers.FAILURE_REASON_HEADER]).startswith("ValidationError")
            assert dead.headers[headers.ORIGINAL_QUEUE_HEADER] == topology.AUDIENCE_CAMPAIGN_STARTED.name
            assert await audience.resolution(started.campaign_id) is None
        finally:
            # The shared dead-letter queue got it too: take it out so no other test trips over it.
            assert await eventually(lambda: _remove_dead_letter(channel, str(started.event_id)))
