"""Fixtures of the audience tests: the service running in-process, a channel on the vhost."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aio_pika
import pytest

from devtools.remote_group_server import RemoteGroupServer
from services.audience.app import create_app
from services.audience.settings import AudienceSettings
from tests.audience.support import BATCH_SIZE, CSV_MAX_BYTES, MAX_MEMBERS, REMOTE_SETTINGS, Audience
from tests.support import Handled, running


@pytest.fixture(scope="module")
async def audience(make_settings: Callable[..., Any]) -> AsyncIterator[Audience]:
    """The audience service with small batches and a small request limit, one per test module."""
    settings = make_settings(
        AudienceSettings,
        SEND_BATCH_SIZE=BATCH_SIZE,
        MAX_GROUP_MEMBERS_PER_REQUEST=MAX_MEMBERS,
        CSV_MAX_BYTES=CSV_MAX_BYTES,
        **REMOTE_SETTINGS,
    )
    app = create_app(settings)
    handled = Handled()
    app.state.runtime.broker.add_middleware(handled.middleware())
    async with running(app) as client:
        yield Audience(app, client, handled)


@pytest.fixture
async def channel(rabbitmq_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel on this run's vhost; its exclusive queues go when the test ends."""
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def remote_server() -> Iterator[RemoteGroupServer]:
    """The local remote-group server: 25 records in pages of 10 unless a URL asks otherwise."""
    server = RemoteGroupServer(records=25, page_size=10, token="segredo-do-polo").start()
    yield server
    server.stop()
