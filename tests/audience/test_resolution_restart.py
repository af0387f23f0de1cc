"""A resolution interrupted half-way starts over and ends with no gap and no duplicate.

The audience here reads remote groups through a scripted fetcher: its first read of a group
stops after two pages with a dropped connection (as a crash or network loss would), its second
read is whole. The broker's retry tier redelivers campaign.started, as it would after a crash.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import pytest

from services.audience.app import create_app
from services.audience.remote import RemoteMember, RemoteOptions
from services.audience.settings import AudienceSettings
from shared.broker import declare_account_queue, publish_event
from shared.contracts import CampaignRecipientsResolved, SendBatch, topology
from tests.audience.support import (
    REMOTE_SETTINGS,
    Audience,
    about,
    campaign_started,
    collect,
    listen_to_events,
)
from tests.support import Handled, eventually, running, unique_id

pytestmark = pytest.mark.connected

PAGES = 5
# Two pages are more than one COPY's worth of rows: the first read leaves rows staged.
PAGE_SIZE = 6000
BATCH = 1000
URL = "http://127.0.0.1:9/grupo?token=roteiro"


def _page(number: int) -> list[RemoteMember]:
    members = [
        RemoteMember(f"Pessoa {number}.{i}", f"p{number}.{i}@example.com") for i in range(PAGE_SIZE - 1)
    ]
    # One invalid address per page, and on page 5 a repeat of page 1 in other letters.
    members.append(
        RemoteMember("Ruim", f"ruim-{number}") if number != 5 else RemoteMember("Rep", "P1.0@EXAMPLE.com")
    )
    return members


class ScriptedFetcher:
    """Reads of each URL are counted; the first one breaks after two pages."""

    def __init__(self) -> None:
        self.reads: Counter[str] = Counter()

    async def __call__(self, url: str, options: RemoteOptions) -> AsyncIterator[list[RemoteMember]]:
        self.reads[url] += 1
        for number in range(1, PAGES + 1):
            if number == 3 and self.reads[url] == 1:
                raise ConnectionResetError("connection lost (scripted)")
            yield _page(number)


@pytest.fixture(scope="module")
def fetcher() -> ScriptedFetcher:
    return ScriptedFetcher()


@pytest.fixture(scope="module")
async def scripted(make_settings: Callable[..., Any], fetcher: ScriptedFetcher) -> AsyncIterator[Audience]:
    """Audience reading remote groups through the scripted fetcher."""
    settings = make_settings(AudienceSettings, SEND_BATCH_SIZE=BATCH, **REMOTE_SETTINGS)
    app = create_app(settings, fetch_remote=fetcher)
    handled = Handled()
    app.state.runtime.broker.add_middleware(handled.middleware())
    async with running(app) as client:
        yield Audience(app, client, handled)


async def test_an_interrupted_resolution_starts_over_and_queues_everyone_once(
    scripted: Audience, fetcher: ScriptedFetcher, channel: aio_pika.abc.AbstractChannel
) -> None:
    url = f"{URL}&run={uuid.uuid4().hex}"
    response = await scripted.client.post(
        "/internal/v1/groups", json={"name": "Polo", "kind": "remote", "url": url}
    )
    assert response.status_code == 201, response.text
    account_id = unique_id()
    await declare_account_queue(scripted.runtime.broker, account_id)
    queue = await channel.declare_queue(topology.account_queue(account_id).name, passive=True)
    events = await listen_to_events(channel, CampaignRecipientsResolved.routing_key)
    started = campaign_started(account_id, [response.json()["group_id"]])

    await publish_event(scripted.runtime.broker, started)

    # First delivery: two pages staged, then the connection drops; the campaign stays resolving.
    [first] = await scripted.handled.wait_for(str(started.event_id))
    assert first is not None and "ConnectionResetError" in first
    resolution = await scripted.resolution(started.campaign_id)
    assert resolution is not None
    assert (resolution["status"], resolution["attempts"]) == ("resolving", 1)
    async with scripted.runtime.pool.acquire() as conn:
        staged = await conn.fetchval(
            "SELECT count(*) FROM staged_members WHERE campaign_id = $1", started.campaign_id
        )
    assert staged == 2 * PAGE_SIZE

    # The retry tier brings it back: a fresh start, read whole.
    [message] = about(
        started.campaign_id, await collect(events, lambda ms: bool(about(started.campaign_id, ms)), within=30)
    )
    resolved = CampaignRecipientsResolved.model_validate_json(message.body)
    included = PAGES * (PAGE_SIZE - 1)
    assert (resolved.included, resolved.invalid, resolved.duplicate) == (included, 4, 1)
    assert fetcher.reads[url] == 2
    resolution = await scripted.dispatched(started.campaign_id)
    assert (resolution["attempts"], resolution["included"]) == (2, included)
    batches = [
        SendBatch.model_validate_json(m.body)
        for m in await collect(queue, lambda ms: len(ms) >= -(-included // BATCH))
    ]
    recipients = [(r.recipient_id, r.email) for b in batches for r in b.recipients]
    assert [rid for rid, _ in recipients] == list(range(1, included + 1))
    expected = [f"p{n}.{i}@example.com" for n in range(1, PAGES + 1) for i in range(PAGE_SIZE - 1)]
    assert [email for _, email in recipients] == expected
    async with scripted.runtime.pool.acquire() as conn:
        left = await conn.fetchval(
            "SELECT count(*) FROM staged_members WHERE campaign_id = $1", started.campaign_id
        )
    assert left == 0
    assert await eventually(lambda: _nothing_more(queue))


async def _nothing_more(queue: aio_pika.abc.AbstractQueue) -> bool:
    return await queue.get(no_ack=True, fail=False) is None
