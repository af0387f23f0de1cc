"""Migrations (forward-only, once each, under a lock) and the processed-events inbox."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared import db


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[str]:
    """A schema name nobody uses; dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def _write(directory: Path, name: str, sql: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(sql, encoding="utf-8")


class TestMigrate:
    async def test_applies_shared_then_own_files_in_order_once(
        self, database_url: str, schema: str, tmp_path: Path
    ) -> None:
        _write(tmp_path, "2026-01-02-0000_second.sql", "ALTER TABLE things ADD COLUMN size int;")
        _write(tmp_path, "2026-01-01-0000_first.sql", "CREATE TABLE things (id int PRIMARY KEY);")

        applied = await db.migrate(database_url, schema, tmp_path)

        assert applied[-2:] == ["2026-01-01-0000_first", "2026-01-02-0000_second"]
        assert all(v.startswith("shared/") for v in applied[:-2]) and applied[:-2]
        assert await db.migrate(database_url, schema, tmp_path) == []
        conn = await asyncpg.connect(database_url)
        try:
            columns = await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'things'",
                schema,
            )
            assert {c["column_name"] for c in columns} == {"id", "size"}
            tables = {
                r["table_name"]
                for r in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
                )
            }
            assert {"outbox", "processed_events", "schema_migrations"} <= tables
        finally:
            await conn.close()

    async def test_concurrent_runs_apply_each_file_once(
        self, database_url: str, schema: str, tmp_path: Path
    ) -> None:
        # Not idempotent on purpose: a second application would fail.
        _write(tmp_path, "2026-01-01-0000_only.sql", "CREATE TABLE once (id int);")

        results = await asyncio.gather(*(db.migrate(database_url, schema, tmp_path) for _ in range(4)))

        flat = [version for applied in results for version in applied]
        assert flat.count("2026-01-01-0000_only") == 1
        assert len(flat) == len(set(flat))

    async def test_a_failing_file_is_rolled_back_and_not_recorded(
        self, database_url: str, schema: str, tmp_path: Path
    ) -> None:
        _write(tmp_path, "2026-01-01-0000_broken.sql", "CREATE TABLE half (id int); SELEC nonsense;")
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await db.migrate(database_url, schema, tmp_path)
        _write(tmp_path, "2026-01-01-0000_broken.sql", "CREATE TABLE half (id int);")
        assert await db.migrate(database_url, schema, tmp_path) == ["2026-01-01-0000_broken"]

    async def test_refuses_a_schema_name_that_is_not_an_identifier(
        self, database_url: str, tmp_path: Path
    ) -> None:
        with pytest.raises(ValueError, match="invalid schema name"):
            await db.migrate(database_url, 'x"; DROP SCHEMA public; --', tmp_path)


class TestFirstProcessing:
    async def test_true_the_first_time_only(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SET LOCAL search_path TO campaign")
        event_id = uuid.uuid4()
        assert await db.first_processing(conn, event_id) is True
        assert await db.first_processing(conn, event_id) is False
        assert await db.first_processing(conn, uuid.uuid4()) is True


class TestCreatePool:
    async def test_connections_see_the_service_schema_first(self, database_url: str) -> None:
        pool = await db.create_pool(database_url, "sender", max_size=2)
        try:
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT current_schema()") == "sender"
                assert await conn.fetchval("SELECT '{\"a\": 1}'::jsonb") == {"a": 1}
        finally:
            await pool.close()

    async def test_starts_while_the_database_is_away(self) -> None:
        pool = await db.create_pool("postgresql://nobody@127.0.0.1:1/none", "sender", max_size=1)
        try:
            with pytest.raises(OSError):
                async with pool.acquire():
                    pass
        finally:
            await pool.close()
