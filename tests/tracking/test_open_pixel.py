"""The open pixel of the running tracking service: a genuine token is a GIF and an event, anything
else a plain 404 and nothing published."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import timedelta

import httpx
import pytest

from services.tracking.api import PIXEL
from services.tracking.engagement import Outgoing
from shared.contracts import EngagementsRecorded, MessageOpened, utc_now
from shared.links import ANONYMOUS, LinkSigner
from tests.support import eventually, unique_id
from tests.tracking.conftest import CURRENT_KEY, PREVIOUS_KEY, Published, Tracking, links, path

pytestmark = pytest.mark.connected


def _ids() -> tuple[int, int]:
    return unique_id(), unique_id() % 10**6 + 1


def _pixel(key: str, campaign_id: int, recipient_id: int) -> str:
    return path(links(key).open_pixel(campaign_id, recipient_id))


def _token(key: str, campaign_id: int, recipient_id: int) -> str:
    return _pixel(key, campaign_id, recipient_id).removeprefix("/o/").removesuffix(".gif")


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


@pytest.fixture
async def opens(published: Published) -> Published:
    await published.listen(MessageOpened)
    return published


class TestOpenPixel:
    async def test_a_genuine_open_answers_a_1x1_gif_never_cached_and_publishes_the_open(
        self, tracking: Tracking, opens: Published
    ) -> None:
        _, client = tracking
        campaign_id, recipient_id = _ids()
        before = utc_now()

        response = await client.get(_pixel(CURRENT_KEY, campaign_id, recipient_id))

        _assert_is_the_pixel(response)
        opened = await opens.next(MessageOpened)
        assert (opened.campaign_id, opened.recipient_id, opened.machine) == (campaign_id, recipient_id, False)
        assert before - timedelta(seconds=1) <= opened.opened_at <= utc_now()

    async def test_a_token_signed_with_the_previous_key_is_still_accepted(
        self, tracking: Tracking, opens: Published
    ) -> None:
        _, client = tracking
        campaign_id, recipient_id = _ids()

        _assert_is_the_pixel(await client.get(_pixel(PREVIOUS_KEY, campaign_id, recipient_id)))

        opened = await opens.next(MessageOpened)
        assert (opened.campaign_id, opened.recipient_id) == (campaign_id, recipient_id)

    async def test_an_anonymous_open_is_counted_without_identity(
        self, tracking: Tracking, opens: Published
    ) -> None:
        _, client = tracking
        campaign_id = unique_id()

        _assert_is_the_pixel(await client.get(_pixel(CURRENT_KEY, campaign_id, ANONYMOUS)))

        opened = await opens.next(MessageOpened)
        assert (opened.campaign_id, opened.recipient_id) == (campaign_id, ANONYMOUS)

    async def test_every_open_is_published_even_a_repeated_one(
        self, tracking: Tracking, opens: Published
    ) -> None:
        _, client = tracking
        url = _pixel(CURRENT_KEY, *_ids())

        for _ in range(2):
            _assert_is_the_pixel(await client.get(url))

        first, second = await opens.next(MessageOpened), await opens.next(MessageOpened)
        assert (first.campaign_id, first.recipient_id) == (second.campaign_id, second.recipient_id)
        assert first.event_id != second.event_id

    @pytest.mark.parametrize(
        ("user_agent", "method"),
        [
            pytest.param("Mozilla/5.0 (via ggpht.com GoogleImageProxy)", "GET", id="gmail-proxy"),
            pytest.param(
                "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", "GET", id="yahoo"
            ),
            pytest.param("Mozilla/5.0", "GET", id="apple-privacy-proxy"),
            pytest.param("python-requests/2.32", "GET", id="script"),
            pytest.param("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/128.0", "HEAD", id="head"),
        ],
    )
    async def test_a_machine_open_is_flagged_not_dropped(
        self, tracking: Tracking, opens: Published, user_agent: str, method: str
    ) -> None:
        _, client = tracking
        campaign_id, recipient_id = _ids()

        response = await client.request(
            method, _pixel(CURRENT_KEY, campaign_id, recipient_id), headers={"user-agent": user_agent}
        )

        assert response.status_code == 200
        opened = await opens.next(MessageOpened)
        assert (opened.campaign_id, opened.recipient_id, opened.machine) == (campaign_id, recipient_id, True)

    @pytest.mark.parametrize(
        "forged",
        [
            pytest.param(lambda c, r: _token("someone-elses-key", c, r), id="other-key"),
            pytest.param(lambda c, r: _token(CURRENT_KEY, c, r)[:-3], id="truncated-mac"),
            pytest.param(lambda c, r: _token(CURRENT_KEY, c, r).split(".")[0], id="no-mac"),
            pytest.param(lambda c, r: _token(CURRENT_KEY, c, r)[2:], id="truncated-payload"),
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
        self, tracking: Tracking, opens: Published, forged: Callable[[int, int], str]
    ) -> None:
        _, client = tracking

        response = await client.get(f"/o/{forged(*_ids())}.gif")

        assert response.status_code == 404, response.text
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == "Not found"
        # Events leave in order, so a genuine open now is the first thing published.
        genuine = _ids()
        _assert_is_the_pixel(await client.get(_pixel(CURRENT_KEY, *genuine)))
        opened = await opens.next(MessageOpened)
        assert (opened.campaign_id, opened.recipient_id) == genuine

    async def test_the_gif_is_served_while_the_broker_is_away_and_the_open_published_when_it_is_back(
        self, tracking: Tracking, opens: Published, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        app, client = tracking
        refused: list[Outgoing] = []

        async def broker_away(batch: Sequence[Outgoing]) -> list[BaseException | None]:
            refused.extend(batch)
            raise ConnectionError("broker away")

        monkeypatch.setattr(app.state.runtime.state["publisher"], "publish", broker_away)
        campaign_id, recipient_id = _ids()

        _assert_is_the_pixel(await client.get(_pixel(CURRENT_KEY, campaign_id, recipient_id)))

        async def tried() -> bool:
            return len(refused) > 0

        await eventually(tried)
        assert await opens.arrived(MessageOpened) == []
        monkeypatch.undo()
        opened = await opens.next(MessageOpened)
        assert (opened.campaign_id, opened.recipient_id) == (campaign_id, recipient_id)
        # Published again in another bundle, the open keeps its own id (consumers deduplicate).
        assert EngagementsRecorded.model_validate_json(refused[0].body).opens[0].event_id == opened.event_id
