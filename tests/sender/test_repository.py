"""The sender's SQL on the real PostgreSQL, each test in a rolled-back transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from services.sender.repository import AccountRepository, CampaignRepository, DeliveryRepository
from shared.contracts import AccountConfigured, utc_now
from tests.sender.examples import a_campaign, an_account, unique_id


@pytest.fixture
async def sender_conn(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """The test's connection, seeing the sender's schema like the service's pool does."""
    await conn.execute("SET LOCAL search_path TO sender")
    yield conn


async def delivery(conn: asyncpg.Connection, campaign_id: int, recipient_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM sender.deliveries WHERE campaign_id = $1 AND recipient_id = $2",
        campaign_id,
        recipient_id,
    )


def stored(accounts: list[AccountConfigured], account_id: int) -> list[AccountConfigured]:
    return [a for a in accounts if a.account_id == account_id]


class TestAccountRepositorySave:
    async def test_keeps_a_new_account(self, sender_conn: asyncpg.Connection) -> None:
        repo = AccountRepository(sender_conn)
        account = an_account()

        assert await repo.save(account) is True

        assert stored(await repo.all(), account.account_id) == [account]

    async def test_a_newer_configuration_replaces_the_stored_one(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = AccountRepository(sender_conn)
        first = an_account(occurred_at=utc_now() - timedelta(minutes=1))
        newer = an_account(first.account_id, active=False)
        await repo.save(first)

        assert await repo.save(newer) is True

        assert stored(await repo.all(), first.account_id) == [newer]

    async def test_an_older_configuration_arriving_late_is_ignored(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = AccountRepository(sender_conn)
        current = an_account(active=False)
        late = an_account(current.account_id, occurred_at=current.occurred_at - timedelta(seconds=1))
        await repo.save(current)

        assert await repo.save(late) is False

        assert stored(await repo.all(), current.account_id) == [current]

    async def test_a_redelivered_configuration_is_current_again(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = AccountRepository(sender_conn)
        account = an_account()
        await repo.save(account)

        assert await repo.save(account) is True


class TestAccountRepositoryAll:
    async def test_lists_the_latest_configuration_of_each_account_by_id(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = AccountRepository(sender_conn)
        low, high = sorted([unique_id(), unique_id()])
        await repo.save(an_account(high))
        await repo.save(an_account(low, occurred_at=utc_now() - timedelta(minutes=1)))
        latest_low = an_account(low, rate_per_second=3)
        await repo.save(latest_low)

        ours = [a for a in await repo.all() if a.account_id in (low, high)]

        assert [a.account_id for a in ours] == [low, high]
        assert ours[0] == latest_low


class TestCampaignRepository:
    async def test_a_campaign_not_received_is_unknown_and_not_cancelled(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        assert await CampaignRepository(sender_conn).get(unique_id()) == (None, False)

    async def test_keeps_the_content_of_a_started_campaign(self, sender_conn: asyncpg.Connection) -> None:
        repo = CampaignRepository(sender_conn)
        campaign = a_campaign(unique_id(), text="Oi {{ nome }}")

        await repo.save(campaign)

        assert await repo.get(campaign.campaign_id) == (campaign, False)

    async def test_saving_again_is_harmless(self, sender_conn: asyncpg.Connection) -> None:
        repo = CampaignRepository(sender_conn)
        campaign = a_campaign(unique_id())
        await repo.save(campaign)

        await repo.save(campaign)

        assert await repo.get(campaign.campaign_id) == (campaign, False)

    async def test_cancels_a_started_campaign(self, sender_conn: asyncpg.Connection) -> None:
        repo = CampaignRepository(sender_conn)
        campaign = a_campaign(unique_id())
        await repo.save(campaign)

        await repo.cancel(campaign.campaign_id)

        assert await repo.get(campaign.campaign_id) == (campaign, True)

    async def test_a_cancellation_may_come_before_the_content(self, sender_conn: asyncpg.Connection) -> None:
        repo = CampaignRepository(sender_conn)
        campaign = a_campaign(unique_id())

        await repo.cancel(campaign.campaign_id)
        assert await repo.get(campaign.campaign_id) == (None, True)

        await repo.save(campaign)
        assert await repo.get(campaign.campaign_id) == (campaign, True)


class TestDeliveryRepositoryClaim:
    async def test_the_first_claim_records_the_delivery_as_sending(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        campaign_id = unique_id()

        assert await DeliveryRepository(sender_conn).claim(campaign_id, 7, "ana@example.com") is True

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None
        assert (row["email"], row["status"], row["provider_message_id"], row["reason"]) == (
            "ana@example.com",
            "sending",
            None,
            None,
        )
        assert row["started_at"] is not None and row["finished_at"] is None

    async def test_a_second_claim_of_the_same_delivery_is_refused(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await repo.claim(campaign_id, 7, "ana@example.com")

        assert await repo.claim(campaign_id, 7, "ana@example.com") is False

    async def test_a_finished_delivery_cannot_be_claimed_again(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await repo.claim(campaign_id, 7, "ana@example.com")
        await repo.finish(campaign_id, 7, "sent", "<id@x>", None)

        assert await repo.claim(campaign_id, 7, "ana@example.com") is False

    async def test_claims_are_per_campaign_and_recipient(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id, other_campaign = unique_id(), unique_id()
        await repo.claim(campaign_id, 7, "ana@example.com")

        assert await repo.claim(campaign_id, 8, "bruno@example.net") is True
        assert await repo.claim(other_campaign, 7, "ana@example.com") is True


class TestDeliveryRepositoryFinish:
    @pytest.mark.parametrize(
        ("status", "provider_message_id", "reason"),
        [
            ("sent", "<abc@mailer.example>", None),
            ("failed", None, "550 5.1.1 user unknown"),
            ("skipped", None, "campaign cancelled"),
        ],
    )
    async def test_completes_a_claimed_delivery_with_its_outcome(
        self,
        sender_conn: asyncpg.Connection,
        status: str,
        provider_message_id: str | None,
        reason: str | None,
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await repo.claim(campaign_id, 7, "ana@example.com")

        await repo.finish(campaign_id, 7, status, provider_message_id, reason)

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None
        assert (row["status"], row["provider_message_id"], row["reason"]) == (
            status,
            provider_message_id,
            reason,
        )
        assert row["finished_at"] >= row["started_at"]

    async def test_does_not_change_a_delivery_already_finished(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await repo.claim(campaign_id, 7, "ana@example.com")
        await repo.finish(campaign_id, 7, "sent", "<first@x>", None)

        await repo.finish(campaign_id, 7, "failed", None, "late refusal")

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None
        assert (row["status"], row["provider_message_id"], row["reason"]) == ("sent", "<first@x>", None)

    async def test_does_not_create_a_delivery_that_was_never_claimed(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        campaign_id = unique_id()

        await DeliveryRepository(sender_conn).finish(campaign_id, 7, "sent", "<id@x>", None)

        assert await delivery(sender_conn, campaign_id, 7) is None

    async def test_refuses_an_unknown_status(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await repo.claim(campaign_id, 7, "ana@example.com")

        with pytest.raises(asyncpg.CheckViolationError):
            async with sender_conn.transaction():
                await repo.finish(campaign_id, 7, "delivered", None, None)


class TestDeliveryRepositoryRelease:
    async def test_gives_a_claim_back_so_a_retry_can_claim_it(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await repo.claim(campaign_id, 7, "ana@example.com")

        await repo.release(campaign_id, 7)

        assert await delivery(sender_conn, campaign_id, 7) is None
        assert await repo.claim(campaign_id, 7, "ana@example.com") is True

    @pytest.mark.parametrize("status", ["sent", "failed", "skipped"])
    async def test_leaves_a_finished_delivery_alone(
        self, sender_conn: asyncpg.Connection, status: str
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await repo.claim(campaign_id, 7, "ana@example.com")
        await repo.finish(campaign_id, 7, status, None, None)

        await repo.release(campaign_id, 7)

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None and row["status"] == status
        assert await repo.claim(campaign_id, 7, "ana@example.com") is False

    async def test_leaves_other_recipients_claims_alone(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await repo.claim(campaign_id, 7, "ana@example.com")
        await repo.claim(campaign_id, 8, "bruno@example.net")

        await repo.release(campaign_id, 7)

        row = await delivery(sender_conn, campaign_id, 8)
        assert row is not None and row["status"] == "sending"
