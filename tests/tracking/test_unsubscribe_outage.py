"""An unsubscribe accepted while RabbitMQ is away is kept, and published once a broker is back.

Its own module: no other tracking service may run meanwhile (its outbox relay would publish
the request before we could see it waiting)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from services.tracking.app import create_app
from services.tracking.settings import TrackingSettings
from shared.contracts import UnsubscribeRequested
from tests.support import running, unique_id
from tests.tracking.conftest import BASE_URL, SIGNING_KEYS, Published, links, path

pytestmark = pytest.mark.connected

# Nothing listens on port 1: every connection is refused at once.
UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1/"


async def test_an_unsubscribe_accepted_with_the_broker_away_is_published_when_it_is_back(
    make_settings: Callable[..., Any], published: Published, db: asyncpg.Connection
) -> None:
    await published.listen(UnsubscribeRequested)
    campaign_id = unique_id()
    url = path(links().unsubscribe(campaign_id, 7))
    cut_off = create_app(
        make_settings(TrackingSettings, TRACKING_SIGNING_KEYS=SIGNING_KEYS, RABBITMQ_URL=UNREACHABLE_BROKER)
    )

    async with (
        cut_off.router.lifespan_context(cut_off),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=cut_off), base_url=BASE_URL) as client,
    ):
        response = await client.post(url, data={"scope": "all", "reason": "sem broker"})
        assert response.status_code == 200, response.text
        assert "Inscrição cancelada" in response.text
        await asyncio.sleep(1.5)  # the outbox relay's tick has come and gone, failing
        assert not cut_off.state.runtime.broker_started.is_set()

    kept = await db.fetchval("SELECT count(*) FROM tracking.unsubscribes WHERE campaign_id = $1", campaign_id)
    waiting = await db.fetch("SELECT routing_key, body FROM tracking.outbox")
    waiting_here = [
        r for r in waiting if UnsubscribeRequested.model_validate_json(r["body"]).campaign_id == campaign_id
    ]
    assert kept == 1
    assert [r["routing_key"] for r in waiting_here] == ["unsubscribe.requested"]
    assert await published.arrived(UnsubscribeRequested) == []

    async with running(create_app(make_settings(TrackingSettings, TRACKING_SIGNING_KEYS=SIGNING_KEYS))):
        requested = await published.next(UnsubscribeRequested)

    assert (requested.campaign_id, requested.recipient_id, requested.scope, requested.reason) == (
        campaign_id,
        7,
        "all",
        "sem broker",
    )
