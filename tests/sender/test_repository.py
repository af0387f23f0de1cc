"""The sender's SQL on the real PostgreSQL, each test in a rolled-back transaction (the locking
tests, which need a second session to see the rows, commit theirs and delete them after)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from uuid import uuid4

import asyncpg
import pytest

from services.sender.repository import (
    AccountRepository,
    AddressRepository,
    CampaignRepository,
    CampaignState,
    Claim,
    ClaimRequest,
    DeliveryRepository,
    OutcomeRow,
    ParkedBatch,
    batch_state,
)
from shared import db, outbox
from shared.contracts import AccountConfigured, MessageSent, utc_now
from tests.sender.examples import a_campaign, a_recipient, an_account, unique_id

ANA = "ana@example.com"
# The sender process claiming in these tests, and one that is gone.
ME = "sender-a:101:aaaa"
GONE = "sender-b:202:bbbb"
UNKNOWN = CampaignState(None, cancelled=False, paused=False)


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


def stored(accounts: list[tuple[AccountConfigured, bool]], account_id: int) -> list[AccountConfigured]:
    return [config for config, _ in accounts if config.account_id == account_id]


async def claim_ana(
    repo: DeliveryRepository, campaign_id: int, claimer: str = ME, account_id: int = 1
) -> Claim:
    """Claim recipient 7 (ana@example.com) of the campaign."""
    return await repo.claim(campaign_id, 7, ANA, account_id, claimer)


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

    async def test_a_new_configuration_keeps_the_pause(self, sender_conn: asyncpg.Connection) -> None:
        repo = AccountRepository(sender_conn)
        first = an_account(occurred_at=utc_now() - timedelta(minutes=1))
        await repo.save(first)
        await repo.set_paused(first.account_id, True, "bounce brake", None, utc_now())

        await repo.save(an_account(first.account_id, rate_per_second=5))

        assert await repo.is_paused(first.account_id) is True


class TestAccountRepositoryAll:
    async def test_lists_the_latest_configuration_of_each_account_by_id_with_its_pause(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = AccountRepository(sender_conn)
        low, high = sorted([unique_id(), unique_id()])
        await repo.save(an_account(high))
        await repo.save(an_account(low, occurred_at=utc_now() - timedelta(minutes=1)))
        latest_low = an_account(low, rate_per_second=3)
        await repo.save(latest_low)
        await repo.set_paused(high, True, "operator", None, utc_now())

        ours = [(a, paused) for a, paused in await repo.all() if a.account_id in (low, high)]

        assert [(a.account_id, paused) for a, paused in ours] == [(low, False), (high, True)]
        assert ours[0][0] == latest_low


class TestAccountRepositorySetPaused:
    async def test_pauses_and_resumes_a_known_account(self, sender_conn: asyncpg.Connection) -> None:
        repo = AccountRepository(sender_conn)
        account = an_account()
        await repo.save(account)
        until = utc_now() + timedelta(hours=1)
        paused_at = utc_now()

        assert await repo.set_paused(account.account_id, True, "bounce brake", until, paused_at) is True

        assert await repo.is_paused(account.account_id) is True
        row = await sender_conn.fetchrow(
            "SELECT pause_reason, paused_until, state_at FROM sender.accounts WHERE account_id = $1",
            account.account_id,
        )
        assert tuple(row) == ("bounce brake", until, paused_at)

        resumed_at = paused_at + timedelta(seconds=1)
        assert await repo.set_paused(account.account_id, False, "operator", None, resumed_at) is False
        assert await repo.is_paused(account.account_id) is False

    async def test_a_pause_older_than_the_resume_is_ignored(self, sender_conn: asyncpg.Connection) -> None:
        repo = AccountRepository(sender_conn)
        account = an_account()
        await repo.save(account)
        resumed_at = utc_now()
        await repo.set_paused(account.account_id, False, "operator", None, resumed_at)

        late = await repo.set_paused(
            account.account_id, True, "bounce brake", None, resumed_at - timedelta(seconds=1)
        )

        assert late is None
        assert await repo.is_paused(account.account_id) is False

    async def test_a_resume_older_than_the_pause_is_ignored(self, sender_conn: asyncpg.Connection) -> None:
        repo = AccountRepository(sender_conn)
        account = an_account()
        await repo.save(account)
        paused_at = utc_now()
        await repo.set_paused(account.account_id, True, "bounce brake", None, paused_at)

        late = await repo.set_paused(
            account.account_id, False, "operator", None, paused_at - timedelta(minutes=1)
        )

        assert late is None
        assert await repo.is_paused(account.account_id) is True
        reason = await sender_conn.fetchval(
            "SELECT pause_reason FROM sender.accounts WHERE account_id = $1", account.account_id
        )
        assert reason == "bounce brake"

    async def test_a_pause_before_the_configuration_waits_for_it(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = AccountRepository(sender_conn)
        account = an_account()

        assert await repo.set_paused(account.account_id, True, "operator", None, utc_now()) is True

        assert await repo.is_paused(account.account_id) is True
        assert [config for config, _ in await repo.all() if config.account_id == account.account_id] == []
        assert await repo.save(account) is True
        assert (account, True) in await repo.all()


class TestAccountRepositorySentPerMinute:
    async def test_counts_only_the_accounts_sends_of_the_last_24_hours_by_minute(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        account_id, other_account, campaign_id = unique_id(), unique_id(), unique_id()
        minute = (utc_now() - timedelta(minutes=10)).replace(second=0, microsecond=0)
        day_start = (utc_now() - timedelta(hours=23, minutes=50)).replace(second=0, microsecond=0)
        rows: list[tuple[int, str, datetime]] = [
            (account_id, "sent", minute + timedelta(seconds=5)),
            (account_id, "sent", minute + timedelta(seconds=55)),
            (account_id, "sent", minute + timedelta(minutes=1, seconds=1)),
            (account_id, "sent", day_start + timedelta(seconds=30)),
            (account_id, "sent", utc_now() - timedelta(hours=25)),
            (account_id, "failed", minute + timedelta(seconds=10)),
            (account_id, "skipped", minute + timedelta(seconds=10)),
            (account_id, "indeterminate", minute + timedelta(seconds=10)),
            (other_account, "sent", minute + timedelta(seconds=10)),
        ]
        await sender_conn.executemany(
            "INSERT INTO sender.deliveries (campaign_id, recipient_id, email, account_id, claimed_by,"
            " status, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (campaign_id, rid, ANA, account, ME, status, at)
                for rid, (account, status, at) in enumerate(rows)
            ],
        )
        await DeliveryRepository(sender_conn).claim(campaign_id, 100, ANA, account_id, ME)

        counted = await AccountRepository(sender_conn).sent_per_minute(account_id)

        assert counted == [(day_start, 1), (minute, 2), (minute + timedelta(minutes=1), 1)]

    async def test_an_account_without_sends_has_an_empty_window(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        assert await AccountRepository(sender_conn).sent_per_minute(unique_id()) == []


class TestCampaignRepository:
    async def test_a_campaign_not_received_is_unknown_and_not_cancelled(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        assert await CampaignRepository(sender_conn).get(unique_id()) == UNKNOWN

    async def test_keeps_the_content_of_a_started_campaign(self, sender_conn: asyncpg.Connection) -> None:
        repo = CampaignRepository(sender_conn)
        campaign = a_campaign(unique_id(), text="Oi {{ nome }}")

        await repo.save(campaign)

        assert await repo.get(campaign.campaign_id) == CampaignState(campaign, cancelled=False, paused=False)

    async def test_saving_again_is_harmless(self, sender_conn: asyncpg.Connection) -> None:
        repo = CampaignRepository(sender_conn)
        campaign = a_campaign(unique_id())
        await repo.save(campaign)

        await repo.save(campaign)

        assert await repo.get(campaign.campaign_id) == CampaignState(campaign, cancelled=False, paused=False)

    async def test_cancels_a_started_campaign(self, sender_conn: asyncpg.Connection) -> None:
        repo = CampaignRepository(sender_conn)
        campaign = a_campaign(unique_id())
        await repo.save(campaign)

        await repo.cancel(campaign.campaign_id)

        assert await repo.get(campaign.campaign_id) == CampaignState(campaign, cancelled=True, paused=False)

    async def test_a_cancellation_may_come_before_the_content(self, sender_conn: asyncpg.Connection) -> None:
        repo = CampaignRepository(sender_conn)
        campaign = a_campaign(unique_id())

        await repo.cancel(campaign.campaign_id)
        assert await repo.get(campaign.campaign_id) == CampaignState(None, cancelled=True, paused=False)

        await repo.save(campaign)
        assert await repo.get(campaign.campaign_id) == CampaignState(campaign, cancelled=True, paused=False)


class TestCampaignRepositorySetPaused:
    async def test_pauses_and_resumes_a_started_campaign(self, sender_conn: asyncpg.Connection) -> None:
        repo = CampaignRepository(sender_conn)
        campaign = a_campaign(unique_id())
        await repo.save(campaign)
        paused_at = utc_now()

        await repo.set_paused(campaign.campaign_id, True, paused_at)
        assert await repo.get(campaign.campaign_id) == CampaignState(campaign, cancelled=False, paused=True)

        await repo.set_paused(campaign.campaign_id, False, paused_at + timedelta(seconds=1))
        assert await repo.get(campaign.campaign_id) == CampaignState(campaign, cancelled=False, paused=False)

    async def test_a_pause_may_come_before_the_content_and_survives_it(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = CampaignRepository(sender_conn)
        campaign = a_campaign(unique_id())

        await repo.set_paused(campaign.campaign_id, True, utc_now())
        await repo.save(campaign)

        assert await repo.get(campaign.campaign_id) == CampaignState(campaign, cancelled=False, paused=True)

    @pytest.mark.parametrize("newer_pauses", [True, False], ids=["late-resume", "late-pause"])
    async def test_an_older_event_arriving_late_is_ignored(
        self, sender_conn: asyncpg.Connection, newer_pauses: bool
    ) -> None:
        repo = CampaignRepository(sender_conn)
        campaign_id = unique_id()
        newer_at = utc_now()
        await repo.set_paused(campaign_id, newer_pauses, newer_at)

        await repo.set_paused(campaign_id, not newer_pauses, newer_at - timedelta(seconds=1))

        assert (await repo.get(campaign_id)).paused is newer_pauses
        assert (await repo.lock_state(campaign_id)).paused is newer_pauses


class TestCampaignRepositoryLockState:
    async def test_an_unknown_campaign_is_neither_paused_nor_cancelled(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        assert await CampaignRepository(sender_conn).lock_state(unique_id()) == UNKNOWN

    async def test_gives_the_pause_and_cancel_state_without_the_content(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = CampaignRepository(sender_conn)
        campaign = a_campaign(unique_id())
        await repo.save(campaign)
        await repo.set_paused(campaign.campaign_id, True, utc_now())
        await repo.cancel(campaign.campaign_id)

        assert await repo.lock_state(campaign.campaign_id) == CampaignState(None, cancelled=True, paused=True)


class TestCampaignRepositoryHalted:
    async def test_lists_the_paused_and_the_cancelled_campaigns_only(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = CampaignRepository(sender_conn)
        paused, cancelled, resumed, running = (a_campaign(unique_id()) for _ in range(4))
        for campaign in (paused, cancelled, resumed, running):
            await repo.save(campaign)
        await repo.set_paused(paused.campaign_id, True, utc_now() - timedelta(seconds=1))
        await repo.cancel(cancelled.campaign_id)
        await repo.set_paused(resumed.campaign_id, True, utc_now() - timedelta(seconds=1))
        await repo.set_paused(resumed.campaign_id, False, utc_now())
        ours = {c.campaign_id for c in (paused, cancelled, resumed, running)}

        halted = [state for state in await repo.halted() if state.campaign_id in ours]

        assert sorted(halted, key=lambda s: s.paused) == [
            CampaignState(None, cancelled=True, paused=False, campaign_id=cancelled.campaign_id),
            CampaignState(None, cancelled=False, paused=True, campaign_id=paused.campaign_id),
        ]


class TestCampaignRepositoryPark:
    async def test_keeps_batches_aside_oldest_first_until_unparked(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = CampaignRepository(sender_conn)
        campaign_id, other_campaign = unique_id(), unique_id()
        older, newer, others = uuid4(), uuid4(), uuid4()
        await repo.park(newer, campaign_id, 11, 9, b'{"n": 2}')
        await repo.park(older, campaign_id, 12, 0, b'{"n": 1}')
        await repo.park(others, other_campaign, 11, 5, b"{}")
        # Within one transaction now() does not move: date the first one after the second.
        await sender_conn.execute(
            "UPDATE sender.parked_batches SET parked_at = parked_at + interval '1 minute' WHERE batch_id = $1",
            newer,
        )

        assert await repo.parked(campaign_id) == [
            ParkedBatch(older, 12, 0, b'{"n": 1}'),
            ParkedBatch(newer, 11, 9, b'{"n": 2}'),
        ]

        await repo.unpark([older, newer])

        assert await repo.parked(campaign_id) == []
        assert [b.batch_id for b in await repo.parked(other_campaign)] == [others]

    async def test_parking_a_redelivered_batch_again_keeps_one(self, sender_conn: asyncpg.Connection) -> None:
        repo = CampaignRepository(sender_conn)
        campaign_id, batch_id = unique_id(), uuid4()
        await repo.park(batch_id, campaign_id, 11, 3, b"first")

        await repo.park(batch_id, campaign_id, 11, 3, b"again")

        assert await repo.parked(campaign_id) == [ParkedBatch(batch_id, 11, 3, b"first")]


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    """Two sessions of the sender's schema that commit, for what one locks and the other waits on."""
    connections: list[asyncpg.Connection] = []
    for _ in range(2):
        connection = await asyncpg.connect(database_url, server_settings={"search_path": "sender"})
        await db.init_connection(connection)
        connections.append(connection)
    try:
        yield connections[0], connections[1]
    finally:
        for connection in connections:
            await connection.close()


async def refused_while_locked(conn: asyncpg.Connection, query: str, *args: object) -> bool:
    """Whether `query` cannot take its row lock at once (another transaction holds it)."""
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '200ms'")
            await conn.execute(query, *args)
    except asyncpg.LockNotAvailableError:
        return True
    return False


class TestCampaignRepositoryLocks:
    async def test_the_state_stays_locked_until_the_transaction_ends(
        self, sessions: tuple[asyncpg.Connection, asyncpg.Connection]
    ) -> None:
        parking, resuming = sessions
        campaign_id = unique_id()
        await CampaignRepository(parking).set_paused(campaign_id, True, utc_now())
        try:
            async with parking.transaction():
                assert (await CampaignRepository(parking).lock_state(campaign_id)).paused
                # A resume waits for the batch being parked under the lock.
                assert await refused_while_locked(
                    resuming, "UPDATE sender.campaigns SET paused = false WHERE campaign_id = $1", campaign_id
                )
            assert not await refused_while_locked(
                resuming, "UPDATE sender.campaigns SET paused = false WHERE campaign_id = $1", campaign_id
            )
        finally:
            await parking.execute("DELETE FROM sender.campaigns WHERE campaign_id = $1", campaign_id)

    async def test_parked_batches_stay_locked_until_the_transaction_ends(
        self, sessions: tuple[asyncpg.Connection, asyncpg.Connection]
    ) -> None:
        republishing, other = sessions
        campaign_id, batch_id = unique_id(), uuid4()
        await CampaignRepository(republishing).park(batch_id, campaign_id, 11, 0, b"{}")
        delete = "DELETE FROM sender.parked_batches WHERE batch_id = $1"
        try:
            async with republishing.transaction():
                assert [b.batch_id for b in await CampaignRepository(republishing).parked(campaign_id)] == [
                    batch_id
                ]
                # A second replica republishing the same campaign waits instead of doubling the batch.
                assert await refused_while_locked(other, delete, batch_id)
            assert not await refused_while_locked(other, delete, batch_id)
        finally:
            await republishing.execute(delete, batch_id)


class TestDeliveryRepositoryClaim:
    async def test_the_first_claim_records_the_delivery_as_sending_by_its_claimer(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        campaign_id = unique_id()

        claim = await claim_ana(DeliveryRepository(sender_conn), campaign_id, account_id=42)

        assert claim == Claim(True, "sending", ME)
        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None
        assert (row["email"], row["account_id"], row["claimed_by"], row["status"]) == (ANA, 42, ME, "sending")
        assert (row["provider_message_id"], row["reason"]) == (None, None)
        assert row["started_at"] is not None and row["finished_at"] is None

    async def test_a_second_claim_of_the_same_delivery_is_refused(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await claim_ana(repo, campaign_id)

        assert await claim_ana(repo, campaign_id) == Claim(False, "sending", ME)

    async def test_a_claim_in_flight_elsewhere_tells_who_holds_it(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await claim_ana(repo, campaign_id, GONE)

        assert await claim_ana(repo, campaign_id, ME) == Claim(False, "sending", GONE)

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None and row["claimed_by"] == GONE

    @pytest.mark.parametrize("status", ["sent", "failed", "skipped", "indeterminate"])
    async def test_a_finished_delivery_cannot_be_claimed_again(
        self, sender_conn: asyncpg.Connection, status: str
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await claim_ana(repo, campaign_id, GONE)
        await repo.finish(campaign_id, 7, status, None, None)

        assert await claim_ana(repo, campaign_id, ME) == Claim(False, status, GONE)

    async def test_claims_are_per_campaign_and_recipient(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id, other_campaign = unique_id(), unique_id()
        await claim_ana(repo, campaign_id)

        assert (await repo.claim(campaign_id, 8, "bruno@example.net", 1, ME)).won is True
        assert (await claim_ana(repo, other_campaign)).won is True


class TestDeliveryRepositoryTakeOver:
    async def test_takes_over_the_claim_of_the_named_process(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await claim_ana(repo, campaign_id, GONE)

        assert await repo.take_over(campaign_id, 7, GONE, ME) is True

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None and (row["status"], row["claimed_by"]) == ("sending", ME)

    async def test_refuses_when_another_process_holds_the_claim(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await claim_ana(repo, campaign_id, GONE)
        await repo.take_over(campaign_id, 7, GONE, "sender-c:303:cccc")

        # Two replicas saw the same dead claim: only the first takes it over.
        assert await repo.take_over(campaign_id, 7, GONE, ME) is False

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None and row["claimed_by"] == "sender-c:303:cccc"

    async def test_refuses_a_finished_delivery(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await claim_ana(repo, campaign_id, GONE)
        await repo.finish(campaign_id, 7, "indeterminate", None, "judged by another replica")

        assert await repo.take_over(campaign_id, 7, GONE, ME) is False

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None and (row["status"], row["claimed_by"]) == ("indeterminate", GONE)

    async def test_refuses_a_delivery_never_claimed(self, sender_conn: asyncpg.Connection) -> None:
        campaign_id = unique_id()

        assert await DeliveryRepository(sender_conn).take_over(campaign_id, 7, GONE, ME) is False
        assert await delivery(sender_conn, campaign_id, 7) is None

    async def test_takes_over_a_claim_written_before_claimers_were_recorded(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        # Rows in flight when the migration added `claimed_by` have none: `claim` reports None, and
        # the resend setting hands that None back here.
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await sender_conn.execute(
            "INSERT INTO sender.deliveries (campaign_id, recipient_id, email, status) VALUES ($1, 7, $2, 'sending')",
            campaign_id,
            ANA,
        )
        claim = await claim_ana(repo, campaign_id)
        assert claim == Claim(False, "sending", None)

        assert await repo.take_over(campaign_id, 7, claim.claimed_by, ME) is True

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None and row["claimed_by"] == ME


class TestDeliveryRepositoryFinish:
    @pytest.mark.parametrize(
        ("status", "provider_message_id", "reason"),
        [
            ("sent", "<abc@mailer.example>", None),
            ("failed", None, "550 5.1.1 user unknown"),
            ("skipped", None, "campaign cancelled"),
            ("indeterminate", None, "connection lost after the message data was sent"),
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
        await claim_ana(repo, campaign_id)

        assert await repo.finish(campaign_id, 7, status, provider_message_id, reason) is True

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
        await claim_ana(repo, campaign_id)
        await repo.finish(campaign_id, 7, "sent", "<first@x>", None)

        assert await repo.finish(campaign_id, 7, "failed", None, "late refusal") is False

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None
        assert (row["status"], row["provider_message_id"], row["reason"]) == ("sent", "<first@x>", None)

    async def test_a_send_judged_indeterminate_meanwhile_stays_so(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await claim_ana(repo, campaign_id)
        # Another replica got the batch again and reported the claim as indeterminate.
        await repo.finish(campaign_id, 7, "indeterminate", None, "the sender stopped")

        assert await repo.finish(campaign_id, 7, "sent", "<late@x>", None) is False

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None and (row["status"], row["provider_message_id"]) == ("indeterminate", None)

    async def test_does_not_create_a_delivery_that_was_never_claimed(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        campaign_id = unique_id()

        assert await DeliveryRepository(sender_conn).finish(campaign_id, 7, "sent", "<id@x>", None) is False

        assert await delivery(sender_conn, campaign_id, 7) is None

    async def test_refuses_an_unknown_status(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await claim_ana(repo, campaign_id)

        with pytest.raises(asyncpg.CheckViolationError):
            async with sender_conn.transaction():
                await repo.finish(campaign_id, 7, "delivered", None, None)


def an_outcome(campaign_id: int, recipient_id: int, status: str = "sent") -> OutcomeRow:
    """The outcome of a delivery, with its event as the ledger queues it."""
    event = MessageSent(
        campaign_id=campaign_id,
        account_id=1,
        recipient_id=recipient_id,
        email=f"r{recipient_id}@example.com",
        name="",
        provider_message_id=f"<{recipient_id}@x>",
        sent_at=utc_now(),
    )
    return OutcomeRow(
        campaign_id,
        recipient_id,
        status,
        f"<{recipient_id}@x>",
        None,
        outbox.event_row(event, {"traceparent": "00-abc-def-01"}),
    )


async def queued_events(conn: asyncpg.Connection, campaign_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT routing_key, headers, message_id, body FROM sender.outbox"
        " WHERE convert_from(body, 'UTF8')::jsonb ->> 'campaign_id' = $1 ORDER BY outbox_id",
        str(campaign_id),
    )


class TestDeliveryRepositoryRecord:
    async def test_completes_outcomes_queues_their_events_and_claims_in_one_statement(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await repo.claim(campaign_id, 1, "r1@example.com", 1, ME)
        await repo.claim(campaign_id, 2, "r2@example.com", 1, ME)
        sent_1, sent_2 = an_outcome(campaign_id, 1), an_outcome(campaign_id, 2)

        recorded = await repo.record(
            ME,
            [
                ClaimRequest(campaign_id, 1, 3, "r3@example.com"),
                ClaimRequest(campaign_id, 1, 4, "r4@example.com"),
            ],
            [sent_1, sent_2],
        )

        assert recorded.finished == {(campaign_id, 1), (campaign_id, 2)}
        assert recorded.claims == {
            (campaign_id, 3): Claim(True, "sending", ME),
            (campaign_id, 4): Claim(True, "sending", ME),
        }
        assert await sender_conn.fetch(
            "SELECT recipient_id, status, provider_message_id FROM sender.deliveries WHERE campaign_id = $1"
            " ORDER BY recipient_id",
            campaign_id,
        ) == [(1, "sent", "<1@x>"), (2, "sent", "<2@x>"), (3, "sending", None), (4, "sending", None)]
        events = await queued_events(sender_conn, campaign_id)
        # In the order asked, with the trace context they were asked under.
        assert [(e["message_id"], bytes(e["body"])) for e in events] == [
            (sent_1.event[4], sent_1.event[2]),
            (sent_2.event[4], sent_2.event[2]),
        ]
        assert {e["routing_key"] for e in events} == {"message.sent"}
        assert [e["headers"] for e in events] == [{"traceparent": "00-abc-def-01"}] * 2

    async def test_an_outcome_of_a_delivery_no_longer_in_flight_changes_nothing_and_announces_nothing(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await repo.claim(campaign_id, 1, "r1@example.com", 1, ME)
        # Another replica judged it indeterminate meanwhile, and reported that.
        await repo.finish(campaign_id, 1, "indeterminate", None, "the sender stopped")

        recorded = await repo.record(ME, [], [an_outcome(campaign_id, 1), an_outcome(campaign_id, 2)])

        assert recorded.finished == set()
        row = await delivery(sender_conn, campaign_id, 1)
        assert row is not None and row["status"] == "indeterminate"
        assert await delivery(sender_conn, campaign_id, 2) is None
        assert await queued_events(sender_conn, campaign_id) == []

    async def test_a_claim_made_before_tells_its_status_and_claimer(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id, other_campaign = unique_id(), unique_id()
        await repo.claim(campaign_id, 1, "r1@example.com", 1, GONE)
        await repo.claim(campaign_id, 2, "r2@example.com", 1, GONE)
        await repo.finish(campaign_id, 2, "sent", "<2@x>", None)

        recorded = await repo.record(
            ME,
            [
                ClaimRequest(campaign_id, 1, 1, "r1@example.com"),
                ClaimRequest(campaign_id, 1, 2, "r2@example.com"),
                # Claims of several campaigns (and accounts) go in one statement too.
                ClaimRequest(other_campaign, 9, 1, "r1@example.com"),
            ],
            [],
        )

        assert recorded.claims == {
            (campaign_id, 1): Claim(False, "sending", GONE),
            (campaign_id, 2): Claim(False, "sent", GONE),
            (other_campaign, 1): Claim(True, "sending", ME),
        }
        row = await delivery(sender_conn, other_campaign, 1)
        assert row is not None and (row["account_id"], row["claimed_by"]) == (9, ME)


class TestDeliveryRepositoryRelease:
    async def test_gives_a_claim_back_so_a_retry_can_claim_it(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await claim_ana(repo, campaign_id)

        await repo.release(campaign_id, 7)

        assert await delivery(sender_conn, campaign_id, 7) is None
        assert (await claim_ana(repo, campaign_id)).won is True

    @pytest.mark.parametrize("status", ["sent", "failed", "skipped", "indeterminate"])
    async def test_leaves_a_finished_delivery_alone(
        self, sender_conn: asyncpg.Connection, status: str
    ) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await claim_ana(repo, campaign_id)
        await repo.finish(campaign_id, 7, status, None, None)

        await repo.release(campaign_id, 7)

        row = await delivery(sender_conn, campaign_id, 7)
        assert row is not None and row["status"] == status
        assert (await claim_ana(repo, campaign_id)).won is False

    async def test_leaves_other_recipients_claims_alone(self, sender_conn: asyncpg.Connection) -> None:
        repo = DeliveryRepository(sender_conn)
        campaign_id = unique_id()
        await claim_ana(repo, campaign_id)
        await repo.claim(campaign_id, 8, "bruno@example.net", 1, ME)

        await repo.release(campaign_id, 7)

        row = await delivery(sender_conn, campaign_id, 8)
        assert row is not None and row["status"] == "sending"


class TestAddressRepository:
    async def test_nobody_is_blocked_by_default(self, sender_conn: asyncpg.Connection) -> None:
        assert await AddressRepository(sender_conn).blocked([a_recipient(1), a_recipient(2)]) == {}

    async def test_suppressed_and_unsubscribed_addresses_are_blocked_with_their_reason(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = AddressRepository(sender_conn)
        bounced, left, kept = a_recipient(1), a_recipient(2), a_recipient(3)
        await repo.suppress(bounced.email, "bounce", utc_now())
        await repo.unsubscribe(left.email, utc_now())

        assert await repo.blocked([bounced, left, kept]) == {
            bounced.email: "suppressed: bounce",
            left.email: "unsubscribed from every campaign",
        }

    async def test_addresses_match_whatever_their_case(self, sender_conn: asyncpg.Connection) -> None:
        repo = AddressRepository(sender_conn)
        bounced, left = a_recipient(1, email="Ana.Souza@Example.COM"), a_recipient(2)
        await repo.suppress("ANA.SOUZA@example.com", "complaint", utc_now())
        await repo.unsubscribe(left.email.upper(), utc_now())
        shouting = a_recipient(2, email=left.email.upper())

        assert await repo.blocked([bounced, shouting]) == {
            "ana.souza@example.com": "suppressed: complaint",
            left.email.lower(): "unsubscribed from every campaign",
        }

    async def test_a_lifted_suppression_no_longer_blocks(self, sender_conn: asyncpg.Connection) -> None:
        repo = AddressRepository(sender_conn)
        lifted = a_recipient(1)
        suppressed_at = utc_now()
        await repo.suppress(lifted.email, "manual", suppressed_at)

        await repo.unsuppress(lifted.email.upper(), suppressed_at + timedelta(seconds=1))

        assert await repo.blocked([lifted]) == {}

    async def test_a_suppression_older_than_its_lifting_arriving_late_stays_lifted(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = AddressRepository(sender_conn)
        lifted = a_recipient(1)
        lifted_at = utc_now()
        await repo.unsuppress(lifted.email, lifted_at)

        await repo.suppress(lifted.email, "bounce", lifted_at - timedelta(seconds=1))

        assert await repo.blocked([lifted]) == {}

    async def test_a_lifting_older_than_the_suppression_arriving_late_changes_nothing(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = AddressRepository(sender_conn)
        bounced = a_recipient(1)
        suppressed_at = utc_now()
        await repo.suppress(bounced.email, "soft_bounce", suppressed_at)

        await repo.unsuppress(bounced.email, suppressed_at - timedelta(minutes=1))

        assert await repo.blocked([bounced]) == {bounced.email: "suppressed: soft_bounce"}

    async def test_a_newer_suppression_after_a_lifting_blocks_again(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        repo = AddressRepository(sender_conn)
        address = a_recipient(1)
        at = utc_now()
        await repo.suppress(address.email, "manual", at - timedelta(minutes=2))
        await repo.unsuppress(address.email, at - timedelta(minutes=1))

        await repo.suppress(address.email, "complaint", at)

        assert await repo.blocked([address]) == {address.email: "suppressed: complaint"}

    async def test_unsubscribing_twice_is_harmless(self, sender_conn: asyncpg.Connection) -> None:
        repo = AddressRepository(sender_conn)
        left = a_recipient(1)
        await repo.unsubscribe(left.email, utc_now())

        await repo.unsubscribe(left.email, utc_now())

        assert await repo.blocked([left]) == {left.email: "unsubscribed from every campaign"}


class TestBatchState:
    async def test_reads_the_campaign_the_blocked_addresses_and_the_recipients_seen_at_once(
        self, sender_conn: asyncpg.Connection
    ) -> None:
        campaign = a_campaign(1)
        await CampaignRepository(sender_conn).save(campaign)
        await CampaignRepository(sender_conn).set_paused(campaign.campaign_id, True, utc_now())
        fresh, claimed, bounced, left = (a_recipient(i) for i in range(1, 5))
        await DeliveryRepository(sender_conn).claim(
            campaign.campaign_id, claimed.recipient_id, claimed.email, 1, ME
        )
        await AddressRepository(sender_conn).suppress(bounced.email.upper(), "hard_bounce", utc_now())
        await AddressRepository(sender_conn).unsubscribe(left.email, utc_now())

        known = await batch_state(sender_conn, campaign.campaign_id, [fresh, claimed, bounced, left])

        assert known.campaign == CampaignState(campaign, cancelled=False, paused=True)
        assert known.blocked == {
            bounced.email: "suppressed: hard_bounce",
            left.email: "unsubscribed from every campaign",
        }
        assert known.seen == {claimed.recipient_id}

    async def test_a_campaign_not_received_yet_is_unknown(self, sender_conn: asyncpg.Connection) -> None:
        known = await batch_state(sender_conn, unique_id(), [a_recipient(1)])

        assert (known.campaign, known.blocked, known.seen) == (UNKNOWN, {}, set())
