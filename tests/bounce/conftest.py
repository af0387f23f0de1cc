"""Fixtures of the bounce tests: the service running in-process, configured for SNS feedback
from a local stand-in for SNS's certificate host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from services.bounce.app import create_app
from services.bounce.settings import BounceSettings
from shared.contracts import topology
from tests.bounce.signing import HOST_PATTERN, SnsHost
from tests.bounce.support import RAW_SECRET, TOPIC, TOPIC_ACCOUNT, Bounce, Published
from tests.support import Handled, running


@pytest.fixture(scope="session")
def sns_host() -> Iterator[SnsHost]:
    """The https server standing in for SNS's certificate and confirmation host."""
    host = SnsHost().start()
    yield host
    host.stop()


@pytest.fixture(scope="module")
async def bounce(make_settings: Callable[..., Any], sns_host: SnsHost) -> AsyncIterator[Bounce]:
    """The bounce service, one per test module, accepting feedback from TOPIC."""
    settings = make_settings(
        BounceSettings,
        SNS_TOPIC_ACCOUNTS={TOPIC: TOPIC_ACCOUNT},
        SNS_CERT_HOST_PATTERN=HOST_PATTERN,
        SNS_RAW_DELIVERY_SECRET=RAW_SECRET,
        SNS_MAX_BODY_BYTES=16 * 1024,
    )
    async with httpx.AsyncClient(verify=sns_host.client_context()) as sns_http:
        app = create_app(settings, sns_http=sns_http)
        handled = Handled()
        app.state.runtime.broker.add_middleware(handled.middleware())
        async with running(app) as client:
            yield Bounce(app, handled, client)


@pytest.fixture
async def bounce_conn(conn: asyncpg.Connection) -> asyncpg.Connection:
    """The test's rolled-back connection, seeing the bounce schema as the service's pool does."""
    await conn.execute("SET LOCAL search_path TO bounce")
    return conn


@pytest.fixture
async def published(rabbitmq_url: str) -> AsyncIterator[Published]:
    """What bounce publishes from now on (call `listen` first)."""
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        # As every service declares it, so listening works before any service ever ran.
        await channel.declare_exchange(topology.EVENTS.name, aio_pika.ExchangeType.TOPIC, durable=True)
        yield Published(channel)
    finally:
        await connection.close()
