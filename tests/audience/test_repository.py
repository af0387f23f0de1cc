"""Audience's SQL on the real PostgreSQL, each test in a rolled-back transaction."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.audience.models import MemberIn
from services.audience.repository import (
    GroupRepository,
    ImportRepository,
    ResolutionRepository,
    SuppressionRepository,
)
from shared import db
from shared.contracts import Recipient
from shared.errors import NotFound
from tests.audience.support import stage_and_finish
from tests.support import eventually, unique_id

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


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


async def _group(conn: asyncpg.Connection, *emails: str, kind: str = "static") -> int:
    groups = GroupRepository(conn)
    group_id = await groups.create(f"group-{uuid.uuid4().hex[:12]}", kind)
    if emails:
        await groups.add_members(group_id, _members(*emails))
    return group_id


async def _staged(conn: asyncpg.Connection, campaign_id: int) -> list[tuple[int, str, str]]:
    rows = await conn.fetch(
        "SELECT recipient_id, email, name FROM campaign_recipients WHERE campaign_id = $1 ORDER BY recipient_id",
        campaign_id,
    )
    return [(r["recipient_id"], r["email"], r["name"]) for r in rows]


async def _resolution(conn: asyncpg.Connection, campaign_id: int) -> asyncpg.Record:
    return await conn.fetchrow("SELECT * FROM resolutions WHERE campaign_id = $1", campaign_id)


class TestAddMembers:
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

    async def test_the_first_of_addresses_repeated_in_other_letters_wins_and_new_ones_are_counted(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        group_id = await _group(audience_conn, "Ana@example.com", "bruno@example.net", "ANA@example.com")
        groups = GroupRepository(audience_conn)

        added = await groups.add_members(group_id, _members("bruno@EXAMPLE.net", "carla@example.org"))

        assert added == 1
        assert (await groups.get(group_id)).members == 3
        kept = await audience_conn.fetchval(
            "SELECT name FROM group_members WHERE group_id = $1 AND lower(email) = 'ana@example.com'",
            group_id,
        )
        assert kept == "name 0"

    async def test_the_group_fields_are_those_every_member_has(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        groups = GroupRepository(audience_conn)
        group_id = await groups.create("Alunos", "static")
        await groups.add_members(
            group_id,
            [
                MemberIn(email="a@example.com", fields={"curso": "x", "turma": "1"}),
                MemberIn(email="b@example.com", fields={"curso": "y", "turma": "2", "polo": "z"}),
            ],
        )
        assert (await groups.get(group_id)).fields == ["curso", "turma"]

        await groups.add_members(group_id, [MemberIn(email="c@example.com", fields={"turma": "3"})])

        assert (await groups.get(group_id)).fields == ["turma"]


class TestGetRenameDelete:
    async def test_returns_the_group_with_its_member_count(self, audience_conn: asyncpg.Connection) -> None:
        groups = GroupRepository(audience_conn)
        group_id = await groups.create("Polo", "remote", "encrypted", "https://example.com/g?token=***")

        group = await groups.get(group_id)

        assert (group.group_id, group.name, group.kind, group.members, group.url) == (
            group_id,
            "Polo",
            "remote",
            0,
            "https://example.com/g?token=***",
        )

    async def test_an_unknown_group_raises_not_found(self, audience_conn: asyncpg.Connection) -> None:
        groups = GroupRepository(audience_conn)
        for call in (groups.get(2**31 - 1), groups.rename(2**31 - 1, "x"), groups.delete(2**31 - 1)):
            with pytest.raises(NotFound, match=r"group 2147483647 not found"):
                await call
        with pytest.raises(NotFound):
            await groups.lock(2**31 - 1)

    async def test_rename_and_delete(self, audience_conn: asyncpg.Connection) -> None:
        groups = GroupRepository(audience_conn)
        group_id = await _group(audience_conn, "a@example.com")

        await groups.rename(group_id, "Novo nome")
        assert (await groups.get(group_id)).name == "Novo nome"

        await groups.delete(group_id)
        assert await groups.missing([group_id]) == [group_id]
        members = await audience_conn.fetchval(
            "SELECT count(*) FROM group_members WHERE group_id = $1", group_id
        )
        assert members == 0


class TestDeleteWhileAdding:
    async def test_members_added_while_the_group_is_deleted_go_with_it(self, database_url: str) -> None:
        # Members have no foreign key: the group's lock alone keeps them from outliving it.
        adding, deleting = await _connect(database_url), await _connect(database_url)
        try:
            group_id = await _group(adding)
            adder = adding.transaction()
            await adder.start()
            await GroupRepository(adding).lock(group_id)
            await GroupRepository(adding).add_members(group_id, _members("late@example.com"))
            removal = asyncio.create_task(_delete(deleting, group_id))

            async def blocked() -> bool:
                return bool(
                    await adding.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)",
                        deleting.get_server_pid(),
                    )
                )

            await eventually(blocked)
            await adder.commit()
            await asyncio.wait_for(removal, 10)

            orphans = await adding.fetchval(
                "SELECT count(*) FROM group_members WHERE group_id = $1", group_id
            )
            assert orphans == 0
            assert await GroupRepository(adding).missing([group_id]) == [group_id]
        finally:
            await adding.close()
            await deleting.close()

    async def test_adding_to_a_group_deleted_meanwhile_is_not_found(self, database_url: str) -> None:
        adding, deleting = await _connect(database_url), await _connect(database_url)
        try:
            group_id = await _group(adding)
            remover = deleting.transaction()
            await remover.start()
            await GroupRepository(deleting).delete(group_id)
            waiting = asyncio.create_task(_lock_and_add(adding, group_id))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            await remover.commit()

            with pytest.raises(NotFound):
                await asyncio.wait_for(waiting, 10)
            assert (
                await adding.fetchval("SELECT count(*) FROM group_members WHERE group_id = $1", group_id) == 0
            )
        finally:
            await adding.close()
            await deleting.close()


async def _delete(conn: asyncpg.Connection, group_id: int) -> None:
    async with conn.transaction():
        await GroupRepository(conn).delete(group_id)


async def _lock_and_add(conn: asyncpg.Connection, group_id: int) -> None:
    async with conn.transaction():
        await GroupRepository(conn).lock(group_id)
        await GroupRepository(conn).add_members(group_id, _members("late@example.com"))


class TestList:
    async def test_pages_by_id_with_counts(self, audience_conn: asyncpg.Connection) -> None:
        first = await _group(audience_conn, "a@example.com")
        second = await _group(audience_conn)
        third = await _group(audience_conn, "a@example.com", "b@example.com")
        groups = GroupRepository(audience_conn)

        page = await groups.list(after=first - 1, limit=2)
        rest = await groups.list(after=page[-1].group_id, limit=2)

        assert [(g.group_id, g.members) for g in page] == [(first, 1), (second, 0)]
        assert [(g.group_id, g.members) for g in rest][:1] == [(third, 2)]


class TestMissingAndSources:
    async def test_names_only_the_groups_that_do_not_exist(self, audience_conn: asyncpg.Connection) -> None:
        existing = await _group(audience_conn, "a@example.com")
        unknown = [2**31 - 1, 2**31 - 2]

        assert sorted(await GroupRepository(audience_conn).missing([existing, *unknown])) == sorted(unknown)
        assert await GroupRepository(audience_conn).missing([existing]) == []
        assert await GroupRepository(audience_conn).missing([]) == []

    async def test_sources_come_in_the_given_order_without_the_missing(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        first = await _group(audience_conn, "a@example.com")
        second = await _group(audience_conn, kind="csv")

        sources = await GroupRepository(audience_conn).sources([second, 2**31 - 1, first])

        assert [(s.group_id, s.kind, s.fields) for s in sources] == [
            (second, "csv", []),
            (first, "static", ["n"]),
        ]


class TestResolution:
    async def test_stages_each_address_once_numbered_in_group_order(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        first = await _group(audience_conn, "ana@example.com", "bruno@example.net", "carla@example.org")
        second = await _group(audience_conn, "Carla@EXAMPLE.org", "davi@example.com", "ANA@example.com")
        campaign_id = unique_id()

        counts = await stage_and_finish(
            audience_conn, campaign_id, 7, 3, [second, first], {"traceparent": "x"}
        )

        assert (counts.included, counts.duplicate, counts.invalid) == (4, 2, 0)
        # The second group comes first: its spelling of a repeated address, and its order, win.
        assert await _staged(audience_conn, campaign_id) == [
            (1, "Carla@example.org", "name 0"),
            (2, "davi@example.com", "name 1"),
            (3, "ANA@example.com", "name 2"),
            (4, "bruno@example.net", "name 1"),
        ]
        row = await _resolution(audience_conn, campaign_id)
        assert (row["account_id"], row["priority"], row["status"]) == (7, 3, "resolved")
        assert (row["included"], row["duplicate"], row["dispatched_upto"]) == (4, 2, 0)
        assert row["trace_headers"] == {"traceparent": "x"}
        left = await audience_conn.fetchval(
            "SELECT count(*) FROM staged_members WHERE campaign_id = $1", campaign_id
        )
        assert left == 0

    async def test_suppressed_and_unsubscribed_addresses_are_left_out_and_counted(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        emails = [f"{who}.{tag}@example.com" for who in ("ana", "bruno", "carla", "davi", "eva")]
        group = await _group(audience_conn, *emails)
        lists = SuppressionRepository(audience_conn)
        await lists.set_suppressed(
            emails[0].upper().replace("EXAMPLE.COM", "example.com"), True, "bounce", NOW
        )
        await lists.set_suppressed(emails[1], True, "complaint", NOW)
        await lists.set_suppressed(emails[1], False, "", NOW + timedelta(minutes=1))  # taken off the list
        await lists.unsubscribe(emails[2], "não quero", NOW)
        await lists.unsubscribe(emails[3], "", NOW)
        await lists.set_suppressed(emails[3], True, "bounce", NOW)  # both: counted once, as suppressed
        campaign_id = unique_id()

        counts = await stage_and_finish(audience_conn, campaign_id, 1, 0, [group])

        assert (counts.included, counts.suppressed, counts.unsubscribed, counts.duplicate) == (2, 2, 1, 0)
        assert [e for _, e, _ in await _staged(audience_conn, campaign_id)] == [emails[1], emails[4]]

    async def test_invalid_staged_members_are_counted_and_never_queued(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        campaign_id = unique_id()
        resolutions = ResolutionRepository(audience_conn)
        await resolutions.begin(campaign_id, 1, 0, {})
        await resolutions.copy_staged(
            [
                (campaign_id, 1, 1, "a@example.com", "A", None),
                (campaign_id, 1, 2, "not-an-address", "B", "e-mail inválido: x"),
                (campaign_id, 1, 3, "A@example.com", "C", None),
            ]
        )

        counts = await resolutions.finish(campaign_id)

        assert (counts.included, counts.invalid, counts.duplicate) == (1, 1, 1)
        assert await _staged(audience_conn, campaign_id) == [(1, "a@example.com", "A")]
        row = await _resolution(audience_conn, campaign_id)
        assert (row["invalid"], row["duplicate"], row["status"]) == (1, 1, "resolved")

    async def test_beginning_again_throws_away_what_an_interrupted_attempt_staged(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        group = await _group(audience_conn, "a@example.com", "b@example.com")
        campaign_id = unique_id()
        resolutions = ResolutionRepository(audience_conn)
        await resolutions.begin(campaign_id, 1, 0, {})
        await resolutions.stage_group(campaign_id, 1, group)
        assert await resolutions.status(campaign_id) == "resolving"

        await resolutions.begin(campaign_id, 1, 0, {})
        await resolutions.stage_group(campaign_id, 1, group)
        counts = await resolutions.finish(campaign_id)

        assert (counts.included, counts.duplicate) == (2, 0)
        assert (await _resolution(audience_conn, campaign_id))["attempts"] == 2

    async def test_a_failure_is_remembered_with_its_reason_and_staging_dropped(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        group = await _group(audience_conn, "a@example.com")
        campaign_id = unique_id()
        resolutions = ResolutionRepository(audience_conn)
        await resolutions.begin(campaign_id, 4, 2, {})
        await resolutions.stage_group(campaign_id, 1, group)

        await resolutions.record_failure(campaign_id, 4, 2, "grupo 'X' (página 2): falhou")

        row = await _resolution(audience_conn, campaign_id)
        assert (row["status"], row["failure_reason"], row["included"]) == (
            "failed",
            "grupo 'X' (página 2): falhou",
            0,
        )
        left = await audience_conn.fetchval(
            "SELECT count(*) FROM staged_members WHERE campaign_id = $1", campaign_id
        )
        assert left == 0

    async def test_status_is_none_for_a_campaign_never_seen(self, audience_conn: asyncpg.Connection) -> None:
        assert await ResolutionRepository(audience_conn).status(unique_id()) is None


class TestCampaignLock:
    async def test_a_second_connection_waits_for_the_campaign_lock(self, database_url: str) -> None:
        campaign_id = unique_id()
        first, second = await _connect(database_url), await _connect(database_url)
        try:
            await ResolutionRepository(first).lock(campaign_id)
            waiting = asyncio.create_task(ResolutionRepository(second).lock(campaign_id))

            async def blocked() -> bool:
                return bool(
                    await first.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)",
                        second.get_server_pid(),
                    )
                )

            await eventually(blocked)
            assert not waiting.done()
            await ResolutionRepository(first).unlock(campaign_id)
            await asyncio.wait_for(waiting, 10)
            await ResolutionRepository(second).unlock(campaign_id)
        finally:
            await first.close()
            await second.close()


class TestSuppressionOrder:
    async def test_an_older_event_arriving_late_does_not_undo_a_newer_one(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        email = f"late.{uuid.uuid4().hex[:8]}@example.com"
        lists = SuppressionRepository(audience_conn)

        await lists.set_suppressed(email, False, "", NOW + timedelta(minutes=5))
        await lists.set_suppressed(email, True, "bounce", NOW)

        row = await audience_conn.fetchrow("SELECT * FROM suppressions WHERE email_key = $1", email)
        assert (row["suppressed"], row["changed_at"]) == (False, NOW + timedelta(minutes=5))

    async def test_the_first_unsubscribe_is_kept(self, audience_conn: asyncpg.Connection) -> None:
        email = f"Bye.{uuid.uuid4().hex[:8]}@example.com"
        lists = SuppressionRepository(audience_conn)

        await lists.unsubscribe(email, "primeiro", NOW)
        await lists.unsubscribe(email, "segundo", NOW + timedelta(days=1))

        row = await audience_conn.fetchrow("SELECT * FROM unsubscribes WHERE email_key = lower($1)", email)
        assert (row["reason"], row["unsubscribed_at"]) == ("primeiro", NOW)


class TestImports:
    async def test_chunks_become_members_once_each_in_file_order(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        group = await _group(audience_conn, "old@example.com", kind="csv")
        imports = ImportRepository(audience_conn)
        import_id = await imports.start(group, "lista.csv", "utf-8", ";")

        first = await imports.add_rows(
            group, ["curso"], [(2, "b@example.com", "B", ["x"]), (3, "OLD@example.com", "Old", ["y"])]
        )
        second = await imports.add_rows(
            group, ["curso"], [(4, "a@example.com", "A", ["z"]), (5, "B@example.com", "B2", ["w"])]
        )
        await imports.copy_errors([(import_id, 6, "e-mail ausente", ";Sem")])
        done = await imports.finish(import_id, rows=5, imported=first + second, invalid=1)

        assert (first, second) == (1, 1)
        assert (done.rows, done.imported, done.invalid, done.duplicate) == (5, 2, 1, 2)
        members = await audience_conn.fetch(
            "SELECT email, name, fields FROM group_members WHERE group_id = $1 ORDER BY member_id", group
        )
        assert [(m["email"], m["name"], m["fields"]) for m in members] == [
            ("old@example.com", "name 0", {"n": "0"}),
            ("b@example.com", "B", {"curso": "x"}),
            ("a@example.com", "A", {"curso": "z"}),
        ]
        assert await imports.last(group) == done
        errors = await imports.first_errors(import_id, 10)
        assert [(e.line, e.reason, e.content) for e in errors] == [(6, "e-mail ausente", ";Sem")]
        assert [row async for row in imports.errors(import_id)] == [(6, "e-mail ausente", ";Sem")]


class TestBatch:
    async def test_returns_the_recipients_after_the_checkpoint_in_order(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        campaign_id = unique_id()
        emails = [f"r{i}@example.com" for i in range(5)]
        await stage_and_finish(audience_conn, campaign_id, 1, 0, [await _group(audience_conn, *emails)])
        resolutions = ResolutionRepository(audience_conn)

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
        await stage_and_finish(audience_conn, newer, 1, 0, [group])
        await stage_and_finish(audience_conn, older, 2, 5, [group], {"traceparent": "t"})
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
        row = await _resolution(audience_conn, older)
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
        await stage_and_finish(audience_conn, campaign_id, 1, 0, [await _group(audience_conn)])

        await resolutions.advance(campaign_id, 0)

        assert (await _resolution(audience_conn, campaign_id))["status"] == "dispatched"

    async def test_resolving_and_failed_campaigns_are_never_pending(
        self, audience_conn: asyncpg.Connection
    ) -> None:
        failed, resolving = unique_id(), unique_id()
        resolutions = ResolutionRepository(audience_conn)
        await resolutions.record_failure(failed, 1, 0, "broken")
        await resolutions.begin(resolving, 1, 0, {})
        # Older than anything else: were they pending, they would come first.
        await audience_conn.execute(
            "UPDATE resolutions SET resolved_at = now() - interval '300 years' WHERE campaign_id = ANY($1)",
            [failed, resolving],
        )

        pending = await resolutions.next_pending()

        assert pending is None or pending.campaign_id not in (failed, resolving)


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
