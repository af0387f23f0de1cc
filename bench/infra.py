"""A throwaway PostgreSQL database and RabbitMQ vhost for one benchmark, removed afterwards.

The database is created from the admin URL (env `BENCH_ADMIN_DATABASE_URL`) with every service's
migrations applied; the vhost is made with `rabbitmqctl` on the broker at `BENCH_RABBITMQ_HOST`.
Both are removed on the way out, whatever happened in between.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from services.migrate import MIGRATIONS
from shared import db

log = logging.getLogger(__name__)

ADMIN_DATABASE_URL = os.environ.get(
    "BENCH_ADMIN_DATABASE_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
)
RABBITMQ_HOST = os.environ.get("BENCH_RABBITMQ_HOST", "127.0.0.1:5672")
RABBITMQ_CREDENTIALS = os.environ.get("BENCH_RABBITMQ_CREDENTIALS", "guest:guest")


@dataclass(frozen=True)
class Environment:
    """Where a benchmark's services connect."""

    database_url: str
    rabbitmq_url: str


async def _admin_execute(sql: str) -> None:
    admin = await asyncpg.connect(ADMIN_DATABASE_URL)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


async def _rabbitmqctl(*args: str) -> None:
    def run() -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)

    await asyncio.to_thread(run)


@asynccontextmanager
async def environment() -> AsyncIterator[Environment]:
    """A fresh migrated database `mailer_bench_<random>` and vhost of the same name."""
    name = f"mailer_bench_{uuid.uuid4().hex[:10]}"
    user = RABBITMQ_CREDENTIALS.split(":", 1)[0]
    database_created = vhost_created = False
    try:
        await _admin_execute(f'CREATE DATABASE "{name}"')
        database_created = True
        database_url = f"{ADMIN_DATABASE_URL.rsplit('/', 1)[0]}/{name}"
        for schema, directory in MIGRATIONS.items():
            await db.migrate(database_url, schema, directory)
        await _rabbitmqctl("add_vhost", name)
        vhost_created = True
        await _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        log.info("bench environment ready: database and vhost %s", name)
        yield Environment(database_url, f"amqp://{RABBITMQ_CREDENTIALS}@{RABBITMQ_HOST}/{name}")
    finally:
        # Also reached on Ctrl-C: asyncio.run cancels the main task once, and this still runs.
        await _remove(name, database_created, vhost_created)


async def _remove(name: str, database: bool, vhost: bool) -> None:
    if vhost:
        try:
            await _rabbitmqctl("delete_vhost", name)
        except Exception:
            log.exception("could not delete vhost %s", name)
    if database:
        try:
            await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception:
            log.exception("could not drop database %s", name)
    log.info("bench environment %s removed", name)
