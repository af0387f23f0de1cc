"""Fixtures of the campaign tests: the service in-process with a stand-in for audience."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from services.campaign.app import create_app
from services.campaign.audience_client import AudienceClient
from services.campaign.settings import CampaignSettings
from shared.contracts import topology
from tests.support import running

# Audience's answers: group 1 and 2 exist.
KNOWN_GROUPS = {1: {"group_id": 1, "name": "Equipe", "kind": "static", "members": 3}, 2: {"group_id": 2}}


def _audience(request: httpx.Request) -> httpx.Response:
    if request.method == "GET":
        group_id = int(request.url.path.rsplit("/", 1)[1])
        if group_id in KNOWN_GROUPS:
            return httpx.Response(200, json=KNOWN_GROUPS[group_id])
        return httpx.Response(404, json={"detail": f"group {group_id} not found"})
    return httpx.Response(201, json={"group_id": 9, **json.loads(request.content)})


@pytest.fixture
async def api(make_settings: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    """The campaign API, running against the real database and vhost."""
    audience = AudienceClient("http://audience", transport=httpx.MockTransport(_audience))
    settings = make_settings(CampaignSettings)
    app = create_app(settings, audience=audience)
    async with running(app) as client:
        client.base_url = httpx.URL("http://test/api/v1")
        # The API answers other services by their token (console users by their session).
        client.headers["Authorization"] = f"Bearer {settings.CAMPAIGN_API_TOKEN}"
        client.app = app  # type: ignore[attr-defined]
        yield client


@pytest.fixture
async def events(rabbitmq_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Listen to events by routing key; returns a function reading what arrived."""
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel()
    queues: dict[str, aio_pika.abc.AbstractQueue] = {}

    async def listen(routing_key: str) -> None:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(topology.EVENTS.name, routing_key=routing_key)
        queues[routing_key] = queue

    async def received(routing_key: str) -> list[dict[str, Any]]:
        bodies = []
        while (message := await queues[routing_key].get(fail=False, no_ack=True)) is not None:
            bodies.append(json.loads(message.body))
        return bodies

    received.listen = listen  # type: ignore[attr-defined]
    yield received
    await connection.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own to the run's database, to read what campaign stored."""
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()
