"""The open pixel of the running tracking service: a genuine token is a GIF and an event, anything
else a plain 404 and nothing published."""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aio_pika
import httpx
import pytest
from fastapi import FastAPI

from services.tracking.api import PIXEL
from services.tracking.app import create_app
from services.tracking.settings import TrackingSettings
from shared.contracts import MessageOpened, topology, utc_now
from shared.links import LinkSigner, TrackingLinks
from tests.support import eventually, running

pytestmark = pytest.mark.connected

CURRENT_KEY = "tracking-key-2026"
PREVIOUS_KEY = "tracking-key-2025"

Tracking = tuple[FastAPI, httpx.AsyncClient]
Queue = aio_pika.abc.AbstractQueue


@pytest.fixture(scope="module")
async def tracking(make_settings: Callable[..., Any]) -> AsyncIterator[Tracking]:
    """The tracking service (signing with the current key, still trusting the previous one)."""
    app = create_app(make_settings(TrackingSettings, TRACKING_SIGNING_KEYS=f"{CURRENT_KEY}, {PREVIOUS_KEY}"))
    async with running(app) as client:
        yield app, client


@pytest.fixture
async def opens(rabbitmq_url: str) -> AsyncIterator[Queue]:
    """An exclusive queue receiving every MessageOpened published from now on."""
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(topology.EVENTS.name, routing_key=MessageOpened.routing_key)
        yield queue
    finally:
        await connection.close()


def _ids() -> tuple[int, int]:
    return random.randint(10**8, 2**31 - 1), random.randint(1, 10**6)


def _pixel(key: str, campaign_id: int, recipient_id: int) -> str:
    """The pixel URL a message carries, signed with `key`."""
    return TrackingLinks("http://test", LinkSigner(key)).open_pixel(campaign_id, recipient_id)


def _token(url: str) -> str:
    return url.removeprefix("http://test/o/").removesuffix(".gif")


async def _next_open(queue: Queue) -> aio_pika.abc.AbstractIncomingMessage:
    """The next MessageOpened published."""

    async def arrived() -> aio_pika.abc.AbstractIncomingMessage:
        message = await queue.get(no_ack=True, fail=False)
        assert message is not None, "no MessageOpened was published"
        return message

    return await eventually(arrived)


def _assert_is_the_pixel(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/gif"
    assert "no-store" in response.headers["cache-control"]
    assert "no-cache" in response.headers["cache-control"]
    assert "max-age=0" in response.headers["cache-control"]
    assert response.headers["pragma"] == "no-cache"
    assert response.content == PIXEL
    assert response.content.startswith(b"GIF89a")
    assert struct.unpack("<HH", response.content[6:10]) == (1, 1)
    assert response.content.endswith(b";")


class TestOpenPixel:
    async def test_a_genuine_open_answers_a_1x1_gif_never_cached_and_publishes_the_open(
        self, tracking: Tracking, opens: Queue
    ) -> None:
        _, client = tracking
        campaign_id, recipient_id = _ids()
        before = utc_now()

        response = await client.get(_pixel(CURRENT_KEY, campaign_id, recipient_id))

        _assert_is_the_pixel(response)
        message = await _next_open(opens)
        opened = MessageOpened.model_validate_json(message.body)
        assert (opened.campaign_id, opened.recipient_id) == (campaign_id, recipient_id)
        assert before - timedelta(seconds=1) <= opened.opened_at <= utc_now()
        assert message.message_id == str(opened.event_id)
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT

    async def test_a_token_signed_with_the_previous_key_is_still_accepted(
        self, tracking: Tracking, opens: Queue
    ) -> None:
        _, client = tracking
        campaign_id, recipient_id = _ids()

        response = await client.get(_pixel(PREVIOUS_KEY, campaign_id, recipient_id))

        _assert_is_the_pixel(response)
        opened = MessageOpened.model_validate_json((await _next_open(opens)).body)
        assert (opened.campaign_id, opened.recipient_id) == (campaign_id, recipient_id)

    async def test_every_open_is_published_even_a_repeated_one(
        self, tracking: Tracking, opens: Queue
    ) -> None:
        _, client = tracking
        url = _pixel(CURRENT_KEY, *_ids())

        for _ in range(2):
            _assert_is_the_pixel(await client.get(url))

        first = MessageOpened.model_validate_json((await _next_open(opens)).body)
        second = MessageOpened.model_validate_json((await _next_open(opens)).body)
        assert (first.campaign_id, first.recipient_id) == (second.campaign_id, second.recipient_id)
        assert first.event_id != second.event_id

    @pytest.mark.parametrize(
        "forged",
        [
            pytest.param(lambda c, r: _token(_pixel("someone-elses-key", c, r)), id="other-key"),
            pytest.param(lambda c, r: _token(_pixel(CURRENT_KEY, c, r))[:-3], id="truncated-mac"),
            pytest.param(lambda c, r: _token(_pixel(CURRENT_KEY, c, r)).split(".")[0], id="no-mac"),
            pytest.param(lambda c, r: _token(_pixel(CURRENT_KEY, c, r))[2:], id="truncated-payload"),
            pytest.param(lambda c, r: LinkSigner(CURRENT_KEY).sign("click", c, r), id="other-kind"),
            pytest.param(lambda c, r: LinkSigner(CURRENT_KEY).sign("open", c), id="one-value"),
            pytest.param(lambda c, r: LinkSigner(CURRENT_KEY).sign("open", c, r, 1), id="three-values"),
            pytest.param(lambda c, r: LinkSigner(CURRENT_KEY).sign("open", c, "ana"), id="not-a-number"),
            pytest.param(lambda c, r: LinkSigner(CURRENT_KEY).sign("open", -c, r), id="negative"),
            pytest.param(lambda c, r: LinkSigner(CURRENT_KEY).sign("open", c, "²"), id="unicode-digit"),
            pytest.param(lambda c, r: "garbage", id="garbage"),
            pytest.param(lambda c, r: "a.b.c", id="dots"),
            pytest.param(lambda c, r: "%C3%A9t%C3%A9.%00", id="non-ascii"),
        ],
    )
    async def test_anything_but_a_genuine_open_token_is_a_plain_404_and_publishes_nothing(
        self, tracking: Tracking, opens: Queue, forged: Callable[[int, int], str]
    ) -> None:
        _, client = tracking
        campaign_id, recipient_id = _ids()
        token = forged(campaign_id, recipient_id)

        response = await client.get(f"/o/{token}.gif")

        assert response.status_code == 404, response.text
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == "Not found"
        # Publishing happens before the response, so a genuine open now is the first thing queued.
        genuine = _ids()
        _assert_is_the_pixel(await client.get(_pixel(CURRENT_KEY, *genuine)))
        opened = MessageOpened.model_validate_json((await _next_open(opens)).body)
        assert (opened.campaign_id, opened.recipient_id) == genuine

    async def test_the_gif_is_served_even_when_the_open_cannot_be_published(
        self, tracking: Tracking, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        app, client = tracking
        calls: list[object] = []

        async def broker_away(*args: object, **kwargs: object) -> None:
            calls.append(args[0])
            raise ConnectionError("broker away")

        monkeypatch.setattr(app.state.runtime.broker, "publish", broker_away)

        response = await client.get(_pixel(CURRENT_KEY, *_ids()))

        _assert_is_the_pixel(response)
        assert len(calls) == 1
        assert isinstance(calls[0], MessageOpened)
