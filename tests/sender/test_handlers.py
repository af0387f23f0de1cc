"""The sender's event handlers, in the running service on the real vhost and database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from services.sender.app import create_app
from services.sender.settings import SenderSettings
from shared.contracts import AccountConfigured, CampaignCancelled, topology
from tests.sender.conftest import Queues, RunningSender
from tests.sender.examples import a_batch, a_campaign, a_recipient, an_account, unique_id
from tests.sender.fakes import RecordingTransports
from tests.support import eventually, running

pytestmark = pytest.mark.connected


async def handled_after(sender: RunningSender, *events: AccountConfigured) -> None:
    """Publish `events`, then a marker account; the handler is serial, so once the marker is
    served every earlier event was handled."""
    for event in events:
        await sender.publish(event)
    await sender.configure(an_account())


async def stored_config(sender: RunningSender, account_id: int) -> AccountConfigured | None:
    config = await sender.fetchval("SELECT config FROM sender.accounts WHERE account_id = $1", account_id)
    return None if config is None else AccountConfigured.model_validate(config)


class TestConfigureAccount:
    async def test_an_active_account_gets_a_consumer_on_its_queue(
        self, sender: RunningSender, queues: Queues
    ) -> None:
        config = an_account()

        served = await sender.configure(config)

        assert served.transport is sender.transports.of(config.account_id)[0]
        assert await stored_config(sender, config.account_id) == config
        assert await queues.consumers(topology.account_queue(config.account_id).name) == 1

    async def test_an_inactive_account_gets_no_consumer(self, sender: RunningSender, queues: Queues) -> None:
        config = an_account(active=False)

        await handled_after(sender, config)

        assert sender.served(config.account_id) is None
        assert sender.transports.of(config.account_id) == []
        assert await queues.consumers(topology.account_queue(config.account_id).name) is None
        assert await stored_config(sender, config.account_id) == config

    async def test_deactivating_an_account_stops_its_consumer(
        self, sender: RunningSender, queues: Queues
    ) -> None:
        config = await sender.configure(an_account())

        await handled_after(sender, an_account(config.config.account_id, active=False))

        assert sender.served(config.config.account_id) is None
        assert [t.closed for t in sender.transports.of(config.config.account_id)] == [True]
        assert await queues.consumers(topology.account_queue(config.config.account_id).name) == 0

    async def test_a_batch_for_a_deactivated_account_waits_in_its_queue(
        self, sender: RunningSender, queues: Queues
    ) -> None:
        account_id = (await sender.configure(an_account())).config.account_id
        await handled_after(sender, an_account(account_id, active=False))
        campaign = a_campaign(account_id)
        await sender.start_campaign(campaign)

        await sender.publish_batch(a_batch(campaign, [a_recipient(1)]))

        assert await eventually(lambda: queues.ready(topology.account_queue(account_id).name)) == 1
        assert await sender.deliveries(campaign.campaign_id) == {}
        assert sender.transports.sent(account_id) == []

    async def test_a_changed_account_is_served_with_the_new_configuration(
        self, sender: RunningSender
    ) -> None:
        first = await sender.configure(an_account(rate_per_second=100))
        account_id = first.config.account_id

        second = await sender.configure(an_account(account_id, rate_per_second=500))

        assert second.config.rate_per_second == 500
        old, new = sender.transports.of(account_id)
        assert old.closed and not new.closed
        assert second.transport is new

    async def test_an_older_configuration_arriving_late_changes_nothing(self, sender: RunningSender) -> None:
        current = await sender.configure(an_account(rate_per_second=100))
        account_id = current.config.account_id
        late = an_account(
            account_id, active=False, occurred_at=current.config.occurred_at - timedelta(minutes=5)
        )

        await handled_after(sender, late)

        served = sender.served(account_id)
        assert served is not None and served.config == current.config
        assert len(sender.transports.of(account_id)) == 1
        assert await stored_config(sender, account_id) == current.config


class TestKeepCampaign:
    async def test_keeps_the_content_of_a_started_campaign(self, sender: RunningSender) -> None:
        campaign = a_campaign(unique_id(), text="Oi {{ nome }}")

        await sender.start_campaign(campaign)

        content = await sender.fetchval(
            "SELECT content FROM sender.campaigns WHERE campaign_id = $1", campaign.campaign_id
        )
        assert type(campaign).model_validate(content) == campaign


class TestCancelCampaign:
    async def test_a_cancellation_before_the_content_is_kept(self, sender: RunningSender) -> None:
        campaign = a_campaign(unique_id())

        await sender.publish(CampaignCancelled(campaign_id=campaign.campaign_id))
        await sender.start_campaign(campaign)

        assert await sender.fetchval(
            "SELECT cancelled FROM sender.campaigns WHERE campaign_id = $1", campaign.campaign_id
        )


class TestStartKnownAccounts:
    async def test_a_restarted_sender_serves_the_accounts_it_knew_and_sends_what_waited(
        self, make_settings: Callable[..., Any], queues: Queues
    ) -> None:
        active, inactive = an_account(), an_account()
        campaign = a_campaign(active.account_id)
        first_run = RecordingTransports()
        app = create_app(make_settings(SenderSettings), make_transport=first_run)
        async with running(app) as client:
            sender = RunningSender(app, client, first_run)
            await sender.configure(active)
            await sender.configure(inactive)
            await handled_after(sender, an_account(inactive.account_id, active=False))
            await sender.start_campaign(campaign)
        assert await queues.consumers(topology.account_queue(active.account_id).name) == 0

        # Audience queues a batch while no sender runs.
        await queues.publish(
            topology.SEND.name,
            topology.account_routing_key(active.account_id),
            a_batch(campaign, [a_recipient(1)]),
        )
        second_run = RecordingTransports()
        app = create_app(make_settings(SenderSettings), make_transport=second_run)
        async with running(app) as client:
            sender = RunningSender(app, client, second_run)

            async def sent() -> bool:
                assert await sender.statuses(campaign.campaign_id) == {1: "sent"}
                return True

            await eventually(sent)
            assert [t.config for t in second_run.of(active.account_id)] == [active]
            assert sender.served(inactive.account_id) is None
            assert second_run.of(inactive.account_id) == []
