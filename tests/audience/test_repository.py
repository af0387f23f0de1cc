"""Audience's SQL on the real PostgreSQL, each test in a rolled-back transaction."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from services.audience.models import MemberIn
from services.audience.repository import GroupRepository, ResolutionRepository
from shared import db
from shared.contracts import Recipient
from shared.errors import NotFound
from tests.support import eventually, unique_id


@pytest.fixture
async def audience_conn(conn: asyncpg.Connection) -> asyncpg.Connection:
    """The test's connection, seeing the audience schema as the service's pool does."""
    await conn.execute("SET LOCAL search_path TO audience")
    return conn


async def _connect(database_url: str) -> asyncpg.Connection:
    """A connection of its own, set up as the service's pool sets up its connections."""
    connection = await asyncpg.connect(database_url, server_settings={"search_path": "audience"})
    await db.init_connection(connection)
    return connection


def _members(*emails: str) -> list[MemberIn]:
    return [MemberIn(email=email, name=f"name {i}", fields={"n": str(i)}) for i, email in enumerate(emails)]


async def _group(conn: asyncpg.Connection, *emails: str) -> int:
    return await GroupRepository(conn).create_static(f"group-{uuid.uuid4().hex[:12]}", _members(*emails))


async def _staged(conn: asyncpg.Connection, campaign_id: int) -> list[tuple[int, str, str]]:
    rows = await conn.fetch(
        "SELECT recipient_id, email, name FROM campaign_recipients WHERE campaign_id = $1 ORDER BY recipient_id",
        campaign_id,
    )
    return [(r["recipient_id"], r["email"], r["name"]) for r in rows]


class TestCreateStatic:
    async def test_stores_the_members_in_order_with_their_fields(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        group_id = await _group(audience_conn, "ana@example.com", "bruno@example.net")

        rows = await audience_conn.fetch(
            "SELECT email, name, fields FROM group_members WHERE group_id = $1 ORDER BY member_id", group_id
        )
        assert [(r["email"], r["name"], r["fields"]) for r in rows] == [
            ("ana@example.com", "name 0", {"n": "0"}),
            ("bruno@example.net", "name 1", {"n": "1"}),
        ]

    async def test_the_first_of_addresses_repeated_in_other_letters_wins(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        group_id = await _group(audience_conn, "Ana@example.com", "bruno@example.net", "ANA@example.com")

        group = await GroupRepository(audience_conn).get(group_id)

        assert group.members == 2
        kept = await audience_conn.fetchval(
            "SELECT name FROM group_members WHERE group_id = $1 AND lower(email) = 'ana@example.com'",
            group_id,
        )
        assert kept == "name 0"


class TestGet:
    async def test_returns_the_group_with_its_member_count(self, audience_conn: asyncpg.Connection) -> None:
        name = f"group-{uuid.uuid4().hex[:12]}"
        group_id = await GroupRepository(audience_conn).create_static(
            name, _members("a@example.com", "b@example.com")
        )

        group = await GroupRepository(audience_conn).get(group_id)

        assert (group.group_id, group.name, group.kind, group.members) == (group_id, name, "static", 2)

    async def test_an_unknown_group_raises_not_found(self, audience_conn: asyncpg.Connection) -> None:
        with pytest.raises(NotFound, match=r"group 2147483647 not found"):
            await GroupRepository(audience_conn).get(2**31 - 1)


class TestList:
    async def test_lists_groups_by_id_with_counts(self, audience_conn: asyncpg.Connection) -> None:
        first = await _group(audience_conn, "a@example.com")
        second = await _group(audience_conn)

        groups = await GroupRepository(audience_conn).list()

        counts = {g.group_id: g.members for g in groups}
        assert (counts[first], counts[second]) == (1, 0)
        assert [g.group_id for g in groups] == sorted(g.group_id for g in groups)


class TestMissing:
    async def test_names_only_the_groups_that_do_not_exist(self, audience_conn: asyncpg.Connection) -> None:
        existing = await _group(audience_conn, "a@example.com")
        unknown = [2**31 - 1, 2**31 - 2]

        assert sorted(await GroupRepository(audience_conn).missing([existing, *unknown])) == sorted(unknown)
        assert await GroupRepository(audience_conn).missing([existing]) == []
        assert await GroupRepository(audience_conn).missing([]) == []


class TestResolve:
    async def test_stages_each_address_once_numbered_in_group_order(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        first = await _group(audience_conn, "ana@example.com", "bruno@example.net", "carla@example.org")
        second = await _group(audience_conn, "Carla@EXAMPLE.org", "davi@example.com", "ANA@example.com")
        campaign_id = unique_id()
        resolutions = ResolutionRepository(audience_conn)

        counts = await resolutions.resolve(campaign_id, 7, 3, [second, first], {"traceparent": "x"})

        assert counts == (4, 2)
        # The second group comes first: its spelling of a repeated address, and its order, win.
        assert await _staged(audience_conn, campaign_id) == [
            (1, "Carla@example.org", "name 0"),
            (2, "davi@example.com", "name 1"),
            (3, "ANA@example.com", "name 2"),
            (4, "bruno@example.net", "name 1"),
        ]
        row = await audience_conn.fetchrow("SELECT * FROM resolutions WHERE campaign_id = $1", campaign_id)
        assert (row["account_id"], row["priority"], row["status"]) == (7, 3, "resolved")
        assert (row["included"], row["duplicate"], row["dispatched_upto"]) == (4, 2, 0)
        assert row["trace_headers"] == {"traceparent": "x"}
        assert await resolutions.exists(campaign_id)

    async def test_an_empty_group_resolves_to_nobody(self, audience_conn: asyncpg.Connection) -> None:
        campaign_id = unique_id()

        counts = await ResolutionRepository(audience_conn).resolve(
            campaign_id, 1, 0, [await _group(audience_conn)], {}
        )

        assert counts == (0, 0)
        assert await _staged(audience_conn, campaign_id) == []

    async def test_a_campaign_resolves_only_once(self, audience_conn: asyncpg.Connection) -> None:
        campaign_id = unique_id()
        group = await _group(audience_conn, "a@example.com")
        await ResolutionRepository(audience_conn).resolve(campaign_id, 1, 0, [group], {})

        with pytest.raises(asyncpg.UniqueViolationError):
            await ResolutionRepository(audience_conn).resolve(campaign_id, 1, 0, [group], {})


class TestExists:
    async def test_false_for_a_campaign_never_seen(self, audience_conn: asyncpg.Connection) -> None:
        assert not await ResolutionRepository(audience_conn).exists(unique_id())

    async def test_waits_for_a_concurrent_resolution_of_the_same_campaign_then_sees_it(
        self, database_url: str
    ) -> None:
        campaign_id = unique_id()
        first, second = await _connect(database_url), await _connect(database_url)
        try:
            transaction = first.transaction()
            await transaction.start()
            assert not await ResolutionRepository(first).exists(campaign_id)
            # A failed resolution is never pending, so committing it disturbs no dispatcher.
            await ResolutionRepository(first).record_failure(campaign_id, 1, 0, "concurrency test")

            async def second_look() -> bool:
                async with second.transaction():
                    return await ResolutionRepository(second).exists(campaign_id)

            look = asyncio.create_task(second_look())

            async def blocked() -> bool:
                return bool(
                    await first.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)",
                        second.get_server_pid(),
                    )
                )

            await eventually(blocked)
            assert not look.done()
            await transaction.commit()
            assert await asyncio.wait_for(look, 10)
        finally:
            await first.close()
            await second.close()


class TestRecordFailure:
    async def test_remembers_the_failed_campaign_and_why(self, audience_conn: asyncpg.Connection) -> None:
        campaign_id = unique_id()
        resolutions = ResolutionRepository(audience_conn)

        await resolutions.record_failure(campaign_id, 4, 2, "group(s) not found: 9")

        assert await resolutions.exists(campaign_id)
        row = await audience_conn.fetchrow("SELECT * FROM resolutions WHERE campaign_id = $1", campaign_id)
        assert (row["status"], row["failure_reason"], row["included"]) == (
            "failed",
            "group(s) not found: 9",
            0,
        )


class TestBatch:
    async def test_returns_the_recipients_after_the_checkpoint_in_order(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        campaign_id = unique_id()
        emails = [f"r{i}@example.com" for i in range(5)]
        resolutions = ResolutionRepository(audience_conn)
        await resolutions.resolve(campaign_id, 1, 0, [await _group(audience_conn, *emails)], {})

        first = await resolutions.batch(campaign_id, 0, 2)
        middle = await resolutions.batch(campaign_id, 2, 2)
        last = await resolutions.batch(campaign_id, 4, 2)

        assert first == [
            Recipient(recipient_id=1, email="r0@example.com", name="name 0", fields={"n": "0"}),
            Recipient(recipient_id=2, email="r1@example.com", name="name 1", fields={"n": "1"}),
        ]
        assert [r.recipient_id for r in middle] == [3, 4]
        assert [(r.recipient_id, r.email) for r in last] == [(5, "r4@example.com")]
        assert await resolutions.batch(campaign_id, 5, 2) == []


class TestAdvanceAndNextPending:
    async def test_the_oldest_campaign_is_pending_until_its_checkpoint_reaches_the_last_recipient(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        older, newer = unique_id(), unique_id()
        resolutions = ResolutionRepository(audience_conn)
        group = await _group(audience_conn, "a@example.com", "b@example.com", "c@example.com")
        await resolutions.resolve(newer, 1, 0, [group], {})
        await resolutions.resolve(older, 2, 5, [group], {"traceparent": "t"})
        # Older than anything another test may have left pending in the shared database.
        for campaign_id, years in ((older, 200), (newer, 100)):
            await audience_conn.execute(
                "UPDATE resolutions SET resolved_at = now() - make_interval(years => $2) WHERE campaign_id = $1",
                campaign_id,
                years,
            )

        pending = await resolutions.next_pending()
        assert pending is not None
        assert (pending.campaign_id, pending.account_id, pending.priority) == (older, 2, 5)
        assert (pending.included, pending.dispatched_upto, pending.trace_headers) == (
            3,
            0,
            {"traceparent": "t"},
        )

        await resolutions.advance(older, 2)
        pending = await resolutions.next_pending()
        assert pending is not None
        assert (pending.campaign_id, pending.dispatched_upto) == (older, 2)

        await resolutions.advance(older, 3)
        row = await audience_conn.fetchrow("SELECT * FROM resolutions WHERE campaign_id = $1", older)
        assert (row["status"], row["dispatched_upto"]) == ("dispatched", 3)
        assert row["dispatched_at"] is not None
        pending = await resolutions.next_pending()
        assert pending is not None
        assert pending.campaign_id == newer

    async def test_a_campaign_without_recipients_is_dispatched_at_zero(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        campaign_id = unique_id()
        resolutions = ResolutionRepository(audience_conn)
        await resolutions.resolve(campaign_id, 1, 0, [await _group(audience_conn)], {})

        await resolutions.advance(campaign_id, 0)

        status = await audience_conn.fetchval(
            "SELECT status FROM resolutions WHERE campaign_id = $1", campaign_id
        )
        assert status == "dispatched"

    async def test_a_failed_campaign_is_never_pending(self, audience_conn: asyncpg.Connection) -> None:
        campaign_id = unique_id()
        await ResolutionRepository(audience_conn).record_failure(campaign_id, 1, 0, "broken")
        # Older than anything else: were failures pending, this one would come first.
        await audience_conn.execute(
            "UPDATE resolutions SET resolved_at = now() - interval '300 years' WHERE campaign_id = $1",
            campaign_id,
        )

        pending = await ResolutionRepository(audience_conn).next_pending()

        assert pending is None or pending.campaign_id != campaign_id


class TestLockDispatch:
    async def test_only_one_transaction_holds_the_dispatch_lock(
        self, audience_conn: asyncpg.Connection, database_url: str
    ) -> None:
        assert await ResolutionRepository(audience_conn).lock_dispatch()

        other = await asyncpg.connect(database_url)
        try:
            async with other.transaction():
                assert not await ResolutionRepository(other).lock_dispatch()
        finally:
            await other.close()
