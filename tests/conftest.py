"""Test infrastructure: a fresh database and RabbitMQ vhost per run, removed at the end.

Both live on the real PostgreSQL and RabbitMQ that `make test` made sure are running
(scripts/infra.sh). Nothing here is shared with another run or with `make run`.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest

from devtools.smtp_sink import SmtpSink
from services.migrate import MIGRATIONS
from shared import db
from shared.settings import ServiceSettings

ADMIN_DATABASE_URL = os.environ.get(
    "TEST_ADMIN_DATABASE_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
)
RABBITMQ_HOST = os.environ.get("TEST_RABBITMQ_HOST", "127.0.0.1:5672")

S = TypeVar("S", bound=ServiceSettings)


@pytest.fixture(scope="session")
def run_id() -> str:
    """A name part unique to this test run."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
async def database_url(run_id: str) -> AsyncIterator[str]:
    """A new database with every service's schema migrated; dropped after the run."""
    name = f"mailer_test_{run_id}"
    admin = await asyncpg.connect(ADMIN_DATABASE_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = f"{ADMIN_DATABASE_URL.rsplit('/', 1)[0]}/{name}"
    for schema, directory in MIGRATIONS.items():
        await db.migrate(url, schema, directory)
    yield url
    admin = await asyncpg.connect(ADMIN_DATABASE_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def rabbitmq_url(run_id: str) -> Iterator[str]:
    """A new RabbitMQ vhost for this run; deleted (with its queues) after the run."""
    vhost = f"mailer_test_{run_id}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@{RABBITMQ_HOST}/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def own_vhost(run_id: str) -> Iterator[str]:
    """A vhost for one test alone: end-to-end tests run real services that consume whatever
    the run's other tests left in the shared vhost's queues (for the same small account ids)."""
    vhost = f"mailer_test_{run_id}_{uuid.uuid4().hex[:6]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@{RABBITMQ_HOST}/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def make_settings(database_url: str, rabbitmq_url: str) -> Callable[..., Any]:
    """Builds a service's settings pointing at this run's database and vhost."""

    def make(cls: type[S], **overrides: Any) -> S:
        values: dict[str, Any] = {
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": rabbitmq_url,
            "LOG_FORMAT": "text",
            "LOG_LEVEL": "WARNING",
        }
        return cls(**(values | overrides))

    return make


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    connection = await asyncpg.connect(database_url)
    await db.init_connection(connection)
    transaction = connection.transaction()
    await transaction.start()
    try:
        yield connection
    finally:
        await transaction.rollback()
        await connection.close()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """A local SMTP server that keeps what it receives."""
    smtp = SmtpSink().start()
    yield smtp
    smtp.stop()
