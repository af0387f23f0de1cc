"""Pause, resume, park, indeterminate claims, refusals of the account, suppression: through the
running sender, on the real database and vhost, with a recording transport."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from services.sender.app import create_app
from services.sender.control import Control
from services.sender.settings import SenderSettings
from shared.contracts import (
    AccountPaused,
    AccountResumed,
    AddressSuppressed,
    AddressUnsuppressed,
    CampaignPaused,
    CampaignResumed,
    MessageIndeterminate,
    RecipientUnsubscribed,
    topology,
)
from tests.sender.conftest import DeliveryEvents, Queues, RunningSender
from tests.sender.examples import a_batch, a_campaign, a_recipient, an_account
from tests.sender.fakes import REFUSED_REPLY, RecordingTransports
from tests.sender.test_sending import outcomes
from tests.support import eventually, running


async def sent_count(sender: RunningSender, campaign_id: int, at_least: int) -> int:
    """Wait until at least `at_least` recipients of the campaign are sent; how many are."""

    async def reached() -> int:
        sent = sum(1 for s in (await sender.statuses(campaign_id)).values() if s == "sent")
        assert sent >= at_least, f"{sent} sent"
        return sent

    return await eventually(reached)


@pytest.mark.connected
class TestAccountPause:
    async def test_a_paused_account_stops_before_its_next_message_and_resumes_where_it_stopped(
        self, sender: RunningSender, queues: Queues
    ) -> None:
        account = await sender.configure(an_account(rate_per_second=20))
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
        recipients = [a_recipient(i) for i in range(1, 61)]
        await sender.publish_batch(a_batch(campaign, recipients))
        await sent_count(sender, campaign.campaign_id, 5)

        await sender.publish(AccountPaused(account_id=campaign.account_id, reason="test", source="operator"))
        published = time.monotonic()

        async def stopped() -> bool:
            assert sender.served(campaign.account_id).halted is not None  # type: ignore[union-attr]
            return True

        await eventually(stopped)
        await asyncio.sleep(1.5)
        transports = sender.transports
        # This account's sends only: the run's other accounts (other tests' leftovers in the shared
        # vhost) may be sending meanwhile.
        after = [t for a, t in transports.sent_at if a == campaign.account_id and t > published + 1.0]
        assert after == [], f"{len(after)} messages sent more than 1 s after the pause"
        sent_at_pause = len(transports.sent(campaign.account_id))
        assert sent_at_pause < len(recipients)
        # Nothing half-done: every claim is either sent or given back.
        assert set((await sender.statuses(campaign.campaign_id)).values()) == {"sent"}
        queue = topology.account_queue(campaign.account_id).name
        assert await queues.consumers(queue) == 0
        assert await queues.ready(queue) == 1

        await sender.publish(AccountResumed(account_id=campaign.account_id, reason="test", source="operator"))

        await outcomes(sender, campaign.campaign_id, {r.recipient_id: "sent" for r in recipients})
        assert set(transports.sent_to(campaign.account_id).values()) == {1}

    async def test_a_pause_older_than_the_resume_changes_nothing(self, sender: RunningSender) -> None:
        account = await sender.configure(an_account())
        resumed = AccountResumed(account_id=account.config.account_id, reason="r", source="operator")
        late_pause = AccountPaused(
            account_id=account.config.account_id,
            reason="p",
            source="operator",
            occurred_at=resumed.occurred_at.replace(year=resumed.occurred_at.year - 1),
        )
        await sender.publish(resumed)
        await sender.publish(late_pause)
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
        await sender.publish_batch(a_batch(campaign, [a_recipient(1)]))
        await outcomes(sender, campaign.campaign_id, {1: "sent"})

    async def test_a_provider_refusing_the_account_pauses_it_instead_of_failing_the_list(
        self, sender: RunningSender, queues: Queues, delivery_events: DeliveryEvents
    ) -> None:
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
        recipients = [a_recipient(i) for i in range(1, 11)]
        for r in recipients:
            sender.transports.refuse_account_on(r.email)

        await sender.publish_batch(a_batch(campaign, recipients))

        async def paused() -> bool:
            assert await sender.fetchval(
                "SELECT paused FROM sender.accounts WHERE account_id = $1", campaign.account_id
            )
            return True

        await eventually(paused)
        reason = await sender.fetchval(
            "SELECT pause_reason FROM sender.accounts WHERE account_id = $1", campaign.account_id
        )
        assert REFUSED_REPLY in reason
        # Nobody's delivery failed for the account's fault; the batch waits in the queue.
        assert await sender.statuses(campaign.campaign_id) == {}
        assert delivery_events.of(campaign.campaign_id) == []
        queue = topology.account_queue(campaign.account_id).name

        async def back_in_queue() -> bool:
            assert (await queues.consumers(queue), await queues.ready(queue)) == (0, 1)
            return True

        await eventually(back_in_queue)
        # At most one attempt per connection in flight, not one per recipient.
        assert sum(sender.transports.attempts.values()) <= account.config.max_connections


@pytest.mark.connected
class TestCampaignPause:
    async def test_a_paused_campaigns_batches_are_set_aside_and_come_back_on_resume(
        self, sender: RunningSender, queues: Queues
    ) -> None:
        account = await sender.configure(an_account(rate_per_second=20))
        paused, other = a_campaign(account.config.account_id), a_campaign(account.config.account_id)
        for campaign in (paused, other):
            await sender.start_campaign(campaign)
        first = [a_recipient(i) for i in range(1, 41)]
        await sender.publish_batch(a_batch(paused, first))
        await sent_count(sender, paused.campaign_id, 3)

        await sender.publish(CampaignPaused(campaign_id=paused.campaign_id))
        await sender.publish_batch(a_batch(paused, [a_recipient(100)]))
        await sender.publish_batch(a_batch(other, [a_recipient(1)]))

        # The account goes on with the other campaign; the paused one's batches wait aside.
        await outcomes(sender, other.campaign_id, {1: "sent"})

        async def parked() -> bool:
            parked = await sender.fetchval(
                "SELECT count(*) FROM sender.parked_batches WHERE campaign_id = $1", paused.campaign_id
            )
            assert parked == 2
            return True

        await eventually(parked)
        sent_while_paused = len(await sender.statuses(paused.campaign_id))
        assert sent_while_paused < len(first)
        assert await queues.ready(topology.account_queue(paused.account_id).name) == 0

        await sender.publish(CampaignResumed(campaign_id=paused.campaign_id))

        expected = {r.recipient_id: "sent" for r in [*first, a_recipient(100)]}
        await outcomes(sender, paused.campaign_id, expected)
        assert set(sender.transports.sent_to(paused.account_id).values()) == {1}
        assert (
            await sender.fetchval(
                "SELECT count(*) FROM sender.parked_batches WHERE campaign_id = $1", paused.campaign_id
            )
            == 0
        )


@pytest.mark.connected
class TestIndeterminate:
    async def _left_in_flight(
        self, sender: RunningSender, campaign_id: int, account_id: int, email: str
    ) -> None:
        async with sender.runtime.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO sender.deliveries (campaign_id, recipient_id, email, account_id, claimed_by, status)"
                " VALUES ($1, 1, $2, $3, 'a-process-that-died', 'sending')",
                campaign_id,
                email,
                account_id,
            )

    async def test_a_claim_left_by_a_dead_process_is_reported_and_not_sent_again(
        self, sender: RunningSender, delivery_events: DeliveryEvents
    ) -> None:
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
        ambiguous, fresh = a_recipient(1), a_recipient(2)
        await self._left_in_flight(sender, campaign.campaign_id, campaign.account_id, ambiguous.email)

        await sender.publish_batch(a_batch(campaign, [ambiguous, fresh]))

        await outcomes(sender, campaign.campaign_id, {1: "indeterminate", 2: "sent"})
        assert ambiguous.email not in sender.transports.attempts
        events = await delivery_events.wait_for(campaign.campaign_id, 2)
        [reported] = [e for e in events if isinstance(e, MessageIndeterminate)]
        assert (reported.recipient_id, reported.email) == (1, ambiguous.email)
        assert "may have been delivered" in reported.reason

    async def test_the_resend_setting_sends_it_again(
        self, make_settings: Callable[..., Any], transports: RecordingTransports
    ) -> None:
        app = create_app(make_settings(SenderSettings, RESEND_INDETERMINATE=True), make_transport=transports)
        async with running(app) as client:
            sender = RunningSender(app, client, transports)
            account = await sender.configure(an_account())
            campaign = a_campaign(account.config.account_id)
            await sender.start_campaign(campaign)
            ambiguous = a_recipient(1)
            await self._left_in_flight(sender, campaign.campaign_id, campaign.account_id, ambiguous.email)

            await sender.publish_batch(a_batch(campaign, [ambiguous]))

            await outcomes(sender, campaign.campaign_id, {1: "sent"})
            assert transports.sent_to(campaign.account_id) == {ambiguous.email: 1}

    async def test_a_connection_lost_after_the_data_is_indeterminate(self, sender: RunningSender) -> None:
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
        lost = a_recipient(1)
        sender.transports.lose_connection_after_data(lost.email)

        await sender.publish_batch(a_batch(campaign, [lost, a_recipient(2)]))

        await outcomes(sender, campaign.campaign_id, {1: "indeterminate", 2: "sent"})
        assert sender.transports.attempts[lost.email] == 1


@pytest.mark.connected
class TestLastMomentChecks:
    async def test_suppressed_and_unsubscribed_addresses_are_skipped_with_the_reason(
        self, sender: RunningSender, delivery_events: DeliveryEvents
    ) -> None:
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
        bounced, left, lifted, kept = a_recipient(1), a_recipient(2), a_recipient(3), a_recipient(4)
        await sender.publish(AddressSuppressed(email=bounced.email.upper(), reason="bounce"))
        await sender.publish(RecipientUnsubscribed(email=left.email, scope="all"))
        await sender.publish(RecipientUnsubscribed(email=kept.email, scope="campaign", campaign_id=1))
        await sender.publish(AddressSuppressed(email=lifted.email, reason="complaint"))
        await sender.publish(AddressUnsuppressed(email=lifted.email))

        async def known() -> bool:
            suppressed = await sender.fetchval(
                "SELECT count(*) FROM sender.suppressed_addresses WHERE email = $1", bounced.email
            )
            unsubscribed = await sender.fetchval(
                "SELECT count(*) FROM sender.unsubscribed_addresses WHERE email = $1", left.email
            )
            lifted_left = await sender.fetchval(
                "SELECT count(*) FROM sender.suppressed_addresses WHERE email = $1 AND NOT suppressed",
                lifted.email,
            )
            assert (suppressed, unsubscribed, lifted_left) == (1, 1, 1)
            return True

        await eventually(known)

        await sender.publish_batch(a_batch(campaign, [bounced, left, lifted, kept]))

        await outcomes(sender, campaign.campaign_id, {1: "skipped", 2: "skipped", 3: "sent", 4: "sent"})
        rows = await sender.deliveries(campaign.campaign_id)
        assert (rows[1]["reason"], rows[2]["reason"]) == (
            "suppressed: bounce",
            "unsubscribed from every campaign",
        )
        assert set(sender.transports.sent_to(campaign.account_id)) == {lifted.email, kept.email}


@pytest.mark.connected
class TestReplicas:
    async def test_every_replica_applies_a_pause(
        self, make_settings: Callable[..., Any], sender: RunningSender
    ) -> None:
        other_transports = RecordingTransports()
        app = create_app(make_settings(SenderSettings), make_transport=other_transports)
        async with running(app) as client:
            other = RunningSender(app, client, other_transports)
            config = an_account()
            await sender.configure(config)
            await eventually(lambda: _consuming(other, config.account_id))

            await sender.publish(AccountPaused(account_id=config.account_id, reason="x", source="operator"))

            async def both_stopped() -> bool:
                for replica in (sender, other):
                    served = replica.served(config.account_id)
                    assert served is not None and not served.consuming
                return True

            await eventually(both_stopped, within=5.0)


async def _consuming(sender: RunningSender, account_id: int) -> bool:
    served = sender.served(account_id)
    assert served is not None and served.consuming
    return True


@pytest.mark.connected
class TestFailover:
    async def test_when_the_active_replica_goes_another_takes_the_account_over(
        self, make_settings: Callable[..., Any]
    ) -> None:
        shared_transports = RecordingTransports()
        config = an_account(rate_per_second=50)
        campaign = a_campaign(config.account_id)
        recipients = [a_recipient(i) for i in range(1, 201)]
        first_app = create_app(make_settings(SenderSettings), make_transport=shared_transports)
        async with AsyncExitStack() as second_running:
            async with running(first_app) as first_client:
                first = RunningSender(first_app, first_client, shared_transports)
                await first.configure(config)
                # Started after the first consumes: the first is the queue's active consumer. (Built
                # only now: the handlers' router module is shared by both apps of this process.)
                second_app = create_app(make_settings(SenderSettings), make_transport=shared_transports)
                second_client = await second_running.enter_async_context(running(second_app))
                second = RunningSender(second_app, second_client, shared_transports)
                await eventually(lambda: _consuming(second, config.account_id))
                await first.start_campaign(campaign)
                for start in range(0, len(recipients), 50):
                    await first.publish_batch(a_batch(campaign, recipients[start : start + 50]))
                await sent_count(first, campaign.campaign_id, 20)
            # The first replica is gone (shut down mid-campaign): the second goes on alone.
            await outcomes(second, campaign.campaign_id, {r.recipient_id: "sent" for r in recipients})
        assert set(shared_transports.sent_to(config.account_id).values()) == {1}
        # Both replicas sent a part: the first until it went, the second after.
        assert sum(1 for t in shared_transports.of(config.account_id) if t.sent) == 2


class TestSendingElsewhere:
    """A claim of this very process is in flight only if another running batch holds the recipient;
    otherwise an attempt that failed half-way left it, and it must not wait forever."""

    def test_only_another_running_batch_of_the_campaign_with_the_recipient_counts(self) -> None:
        control = Control()
        retried = control.begin(1, 7, [10, 11])
        assert not control.sending_elsewhere(retried, 10)
        twin = control.begin(1, 7, [10, 11])
        other_campaign = control.begin(2, 7, [12])
        assert control.sending_elsewhere(retried, 10)
        assert not control.sending_elsewhere(retried, 12)
        control.end(twin)
        control.end(other_campaign)
        assert not control.sending_elsewhere(retried, 10)
