"""The manual's order, on the real broker: one campaign at a time per account, equal priority
waits for the campaign before it, after a pause the highest priority goes first, and two
accounts never wait on each other."""

from __future__ import annotations

import pytest

from shared.contracts import AccountPaused, AccountResumed, CampaignStarted, Recipient, topology
from tests.sender.conftest import Queues, RunningSender
from tests.sender.examples import a_batch, a_campaign, a_recipient, an_account
from tests.sender.test_sending import outcomes
from tests.support import eventually


def _recipients(first: int, count: int) -> list[Recipient]:
    return [a_recipient(i) for i in range(first, first + count)]


def _order(sender: RunningSender, account_id: int, campaigns: dict[str, CampaignStarted]) -> list[str]:
    """Which campaign each message sent through the account belonged to, in sending order."""
    by_id = {str(c.campaign_id): name for name, c in campaigns.items()}
    return [
        by_id[m.data.split(b"X-Mailer-Campaign: ", 1)[1].split(b"\r\n", 1)[0].decode()]
        for m in sender.transports.sent(account_id)
    ]


def _runs(order: list[str]) -> list[str]:
    """The campaigns in the order they were sent, each run of one campaign once."""
    return [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]


@pytest.mark.connected
class TestOneCampaignAtATime:
    async def test_an_equal_priority_campaign_waits_for_the_one_before_it_to_end(
        self, sender: RunningSender
    ) -> None:
        account = await sender.configure(an_account(rate_per_second=200, max_connections=2))
        first, second = a_campaign(account.config.account_id), a_campaign(account.config.account_id)
        for campaign in (first, second):
            await sender.start_campaign(campaign)
        # As audience queues them: every batch of the first campaign, then the second's.
        for start in (1, 21, 41):
            await sender.publish_batch(a_batch(first, _recipients(start, 20)))
        for start in (1, 21):
            await sender.publish_batch(a_batch(second, _recipients(start, 20)))

        await outcomes(sender, second.campaign_id, {i: "sent" for i in range(1, 41)})

        order = _order(sender, account.config.account_id, {"first": first, "second": second})
        assert _runs(order) == ["first", "second"]

    async def test_after_a_pause_the_highest_priority_goes_first(
        self, sender: RunningSender, queues: Queues
    ) -> None:
        account = await sender.configure(an_account(rate_per_second=200, max_connections=1))
        account_id = account.config.account_id
        low, high = a_campaign(account_id), a_campaign(account_id)
        for campaign in (low, high):
            await sender.start_campaign(campaign)
        await sender.publish(AccountPaused(account_id=account_id, reason="test", source="operator"))

        async def stopped() -> bool:
            assert not sender.served(account_id).consuming  # type: ignore[union-attr]
            return True

        await eventually(stopped)
        # Queued while paused: the low-priority campaign first, then a higher one.
        for start in (1, 11, 21):
            await sender.publish_batch(a_batch(low, _recipients(start, 10)), priority=2)
        for start in (1, 11):
            await sender.publish_batch(a_batch(high, _recipients(start, 10)), priority=8)
        assert await queues.ready(topology.account_queue(account_id).name) == 5

        await sender.publish(AccountResumed(account_id=account_id, reason="test", source="operator"))

        await outcomes(sender, low.campaign_id, {i: "sent" for i in range(1, 31)})
        assert _runs(_order(sender, account_id, {"low": low, "high": high})) == ["high", "low"]

    async def test_two_accounts_never_wait_on_each_other(self, sender: RunningSender) -> None:
        slow = await sender.configure(an_account(rate_per_second=5, max_connections=1))
        fast = await sender.configure(an_account(rate_per_second=200))
        long_campaign, short_campaign = a_campaign(slow.config.account_id), a_campaign(fast.config.account_id)
        for campaign in (long_campaign, short_campaign):
            await sender.start_campaign(campaign)
        await sender.publish_batch(a_batch(long_campaign, _recipients(1, 25)))
        await sender.publish_batch(a_batch(short_campaign, _recipients(1, 30)))

        # The fast account's 30 go out while the slow one is still at its first few (5 per second).
        await outcomes(sender, short_campaign.campaign_id, {i: "sent" for i in range(1, 31)}, within=10)
        assert len(sender.transports.sent(slow.config.account_id)) < 25
        # Nothing left behind for the next test's sender.
        await outcomes(sender, long_campaign.campaign_id, {i: "sent" for i in range(1, 26)})
