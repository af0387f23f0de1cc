"""The brake's SQL and counting on the real PostgreSQL, each test in a rolled-back transaction."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from services.bounce import reputation_counts
from services.bounce.reputation_repository import Counts, ReputationRepository
from shared.contracts import AccountConfigured, MessageBounced, MessageComplained, SesConnection, utc_now
from tests.bounce.support import sent
from tests.support import unique_id


def configured(account_id: int, **overrides: Any) -> AccountConfigured:
    """An active SES account configured now."""
    values: dict[str, Any] = {
        "account_id": account_id,
        "name": f"ses-{account_id}",
        "transport": "ses",
        "ses": SesConnection(region="us-east-1", access_key_id="AKID", secret_access_key_encrypted="token"),
        "rate_per_second": 10,
        "active": True,
        "bounce_control": True,
        "pause_hours": 2,
    }
    return AccountConfigured(**(values | overrides))


def bounced(account_id: int, kind: str = "permanent") -> MessageBounced:
    """A bounce of the account, now."""
    return MessageBounced(
        campaign_id=1,
        account_id=account_id,
        recipient_id=1,
        email="a@example.com",
        kind=kind,
        bounced_at=utc_now(),
    )


def complained(account_id: int) -> MessageComplained:
    """A complaint about a message of the account, now."""
    return MessageComplained(
        campaign_id=1, account_id=account_id, recipient_id=1, email="a@example.com", complained_at=utc_now()
    )


class TestConfigure:
    async def test_keeps_the_ses_connection_and_the_brake_settings(
        self, bounce_conn: asyncpg.Connection
    ) -> None:
        event = configured(unique_id(), bounce_threshold=0.03)
        repository = ReputationRepository(bounce_conn)

        await repository.configure(event)

        account = await repository.account(event.account_id)
        assert account is not None
        assert account.ses == event.ses and account.reads_cloudwatch
        assert (account.bounce_threshold, account.complaint_threshold, account.pause_hours) == (
            0.03,
            0.001,
            2,
        )

    async def test_an_older_configuration_delivered_late_changes_nothing(
        self, bounce_conn: asyncpg.Connection
    ) -> None:
        newer = configured(unique_id(), name="newer")
        older = configured(
            newer.account_id, name="older", occurred_at=newer.occurred_at - timedelta(seconds=1)
        )
        repository = ReputationRepository(bounce_conn)

        await repository.configure(newer)
        await repository.configure(older)

        account = await repository.account(newer.account_id)
        assert account is not None and account.name == "newer"

    async def test_only_active_accounts_are_judged(self, bounce_conn: asyncpg.Connection) -> None:
        active, inactive = configured(unique_id()), configured(unique_id(), active=False)
        repository = ReputationRepository(bounce_conn)
        await repository.configure(active)
        await repository.configure(inactive)

        ids = {account.account_id for account in await repository.active_accounts()}

        assert active.account_id in ids and inactive.account_id not in ids

    async def test_an_smtp_account_never_reads_cloudwatch(self, bounce_conn: asyncpg.Connection) -> None:
        event = configured(unique_id(), transport="smtp", ses=None)
        repository = ReputationRepository(bounce_conn)
        await repository.configure(event)

        account = await repository.account(event.account_id)

        assert account is not None and not account.reads_cloudwatch


class TestCounts:
    async def test_each_event_is_counted_once_whatever_the_redeliveries(
        self, bounce_conn: asyncpg.Connection
    ) -> None:
        account_id = unique_id()
        message, bounce, complaint = sent(account_id=account_id), bounced(account_id), complained(account_id)

        for _ in range(2):
            await reputation_counts.count_sent(bounce_conn, message)
            await reputation_counts.count_bounced(bounce_conn, bounce)
            await reputation_counts.count_complained(bounce_conn, complaint)

        counts = await ReputationRepository(bounce_conn).counts_since(
            account_id, utc_now() - timedelta(hours=1)
        )
        assert counts == Counts(sent=1, bounced=1, complained=1)

    async def test_only_hard_bounces_count_as_ses_counts_them(self, bounce_conn: asyncpg.Connection) -> None:
        account_id = unique_id()

        for kind in ("permanent", "transient", "undetermined"):
            await reputation_counts.count_bounced(bounce_conn, bounced(account_id, kind))

        counts = await ReputationRepository(bounce_conn).counts_since(
            account_id, utc_now() - timedelta(hours=1)
        )
        assert counts.bounced == 1

    async def test_the_window_leaves_out_older_minutes_and_pruning_forgets_them(
        self, bounce_conn: asyncpg.Connection
    ) -> None:
        account_id = unique_id()
        now = utc_now()
        repository = ReputationRepository(bounce_conn)
        await repository.add_counts(account_id, now - timedelta(hours=25), sent=5)
        await repository.add_counts(account_id, now, sent=2)
        await repository.add_counts(account_id, now, sent=1, bounced=1)

        assert await repository.counts_since(account_id, now - timedelta(hours=24)) == Counts(3, 1, 0)
        await repository.prune(now - timedelta(hours=24), now - timedelta(days=90))
        assert await repository.counts_since(account_id, now - timedelta(days=2)) == Counts(3, 1, 0)

    async def test_a_minute_bucket_is_the_minute_and_a_shorter_window_counts_finer(
        self, bounce_conn: asyncpg.Connection
    ) -> None:
        account_id = unique_id()
        repository = ReputationRepository(bounce_conn)
        start = utc_now().replace(second=0, microsecond=0) - timedelta(minutes=5)
        await repository.add_counts(account_id, start + timedelta(seconds=59), sent=1)
        await repository.add_counts(account_id, start + timedelta(seconds=70), sent=1)
        window = timedelta(seconds=144)  # buckets of 0.1 s: clamped to a second
        bucket = reputation_counts.bucket_of(window)
        await repository.add_counts(account_id, start + timedelta(seconds=30.4), sent=1, bucket=bucket)
        await repository.add_counts(account_id, start + timedelta(seconds=30.9), bounced=1, bucket=bucket)

        buckets = await bounce_conn.fetch(
            "SELECT minute, sent, bounced FROM reputation_counts WHERE account_id = $1 ORDER BY minute",
            account_id,
        )

        assert reputation_counts.bucket_of(timedelta(hours=24)) == timedelta(minutes=1)
        assert bucket == timedelta(seconds=1)
        assert [(b["minute"] - start, b["sent"], b["bounced"]) for b in buckets] == [
            (timedelta(0), 1, 0),
            (timedelta(seconds=30), 1, 1),
            (timedelta(minutes=1), 1, 0),
        ]
        # A window that began after the bucket of second 30 leaves it out.
        since = start + timedelta(seconds=31)
        assert await repository.counts_since(account_id, since) == Counts(1, 0, 0)


class TestOverrides:
    async def test_an_override_until_a_date_ends_by_itself(self, bounce_conn: asyncpg.Connection) -> None:
        account_id, now = unique_id(), utc_now()
        repository = ReputationRepository(bounce_conn)

        override = await repository.set_override(
            account_id, now + timedelta(hours=1), "clean list", "ana", now
        )

        assert await repository.override(account_id, now + timedelta(minutes=59)) == override
        assert await repository.override(account_id, now + timedelta(hours=1)) is None

    async def test_a_new_override_replaces_the_one_in_force_and_both_stay_logged(
        self, bounce_conn: asyncpg.Connection
    ) -> None:
        account_id, now = unique_id(), utc_now()
        repository = ReputationRepository(bounce_conn)
        await repository.set_override(account_id, None, "first", "ana", now)

        second = await repository.set_override(account_id, now + timedelta(days=1), "second", "bia", now)

        assert await repository.override(account_id, now) == second
        log = await bounce_conn.fetch(
            "SELECT set_by, cleared_by FROM reputation_overrides WHERE account_id = $1 ORDER BY override_id",
            account_id,
        )
        assert [tuple(row) for row in log] == [("ana", "bia"), ("bia", None)]

    async def test_switching_off_records_who_and_finds_nothing_the_second_time(
        self, bounce_conn: asyncpg.Connection
    ) -> None:
        account_id, now = unique_id(), utc_now()
        repository = ReputationRepository(bounce_conn)
        await repository.set_override(account_id, None, "", "ana", now)

        assert await repository.clear_override(account_id, "bia", now)
        assert not await repository.clear_override(account_id, "bia", now)
        assert await repository.override(account_id, now) is None
