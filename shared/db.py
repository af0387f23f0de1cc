"""PostgreSQL access: one pool per service, bound to the service's own schema, and migrations.

Each service owns one schema; its pool sets `search_path` to it, so its SQL names tables
unqualified and can never read another service's tables by accident.

Migrations are forward-only `.sql` files applied in name order (`YYYY-MM-DD-HHMM_slug.sql`),
each in its own transaction, recorded in `<schema>.schema_migrations`, under an advisory lock
so that replicas starting together apply each file once. The files in `shared/migrations/`
(outbox, processed events) are applied to every schema first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

log = logging.getLogger(__name__)

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"
_SCHEMA_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# One lock for every schema: migrations are rare and short, and it keeps DDL strictly serial.
_MIGRATION_LOCK = 7_346_001


def _checked_schema(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name: {schema!r}")
    return schema


async def init_connection(conn: asyncpg.Connection) -> None:
    """Prepare a new connection: jsonb columns come and go as Python objects."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, schema: str, max_size: int) -> asyncpg.Pool:
    """A pool whose connections see `schema` first.

    `min_size=0` opens no connection up front, so a service starts (and reports not-ready)
    while PostgreSQL is away instead of crash-looping; connections open on first use.
    """
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        server_settings={"search_path": _checked_schema(schema), "application_name": f"mailer-{schema}"},
        init=init_connection,
        # Fail fast while the database is down rather than hold requests for the default 60 s.
        timeout=5,
        command_timeout=60,
    )


def _migration_files(directory: Path) -> list[tuple[str, str]]:
    """(version, SQL) of the shared migrations, then the service's, each in name order."""
    files = [(f"shared/{p.stem}", p) for p in sorted(SHARED_MIGRATIONS.glob("*.sql"))]
    files += [(p.stem, p) for p in sorted(directory.glob("*.sql"))]
    return [(version, path.read_text(encoding="utf-8")) for version, path in files]


async def migrate(dsn: str, schema: str, directory: Path) -> list[str]:
    """Apply the shared and then the service's pending migrations; return what was applied."""
    schema = _checked_schema(schema)
    files = _migration_files(directory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'SET search_path TO "{schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
            applied = []
            for version, sql in files:
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                log.info("migration applied", extra={"schema": schema, "version": version})
                applied.append(version)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    finally:
        await conn.close()


async def first_processing(conn: asyncpg.Connection, event_id: UUID) -> bool:
    """Record that an event is being processed in the caller's transaction.

    False means it was processed before (a redelivery): the caller then does nothing, which is
    what makes every consumer idempotent. Call it inside the transaction that does the work.
    """
    inserted: Any = await conn.fetchval(
        "INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true",
        event_id,
    )
    return inserted is not None


def main(migrations: dict[str, Path]) -> None:
    """Command line: migrate the given schemas (all by default) of DATABASE_URL."""
    from shared.settings import ServiceSettings

    parser = argparse.ArgumentParser(description="Apply the services' database migrations.")
    parser.add_argument("schemas", nargs="*", help=f"schemas among {', '.join(migrations)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.schemas) - set(migrations)
    if unknown:
        parser.error(f"unknown schema(s): {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dsn = ServiceSettings().DATABASE_URL

    async def run() -> None:
        for schema in args.schemas or list(migrations):
            applied = await migrate(dsn, schema, migrations[schema])
            print(f"{schema}: {len(applied)} migration(s) applied")

    asyncio.run(run())
