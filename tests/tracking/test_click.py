"""The click redirect: a genuine token redirects where the message said and publishes the click;
anything else is a plain 404, never a redirect, and publishes nothing."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest

from shared.contracts import LinkClicked
from shared.links import ANONYMOUS, CLICK, LinkSigner
from tests.support import unique_id
from tests.tracking.conftest import CURRENT_KEY, PREVIOUS_KEY, Published, Tracking, links, path

pytestmark = pytest.mark.connected

DESTINATION = "https://example.org/cursos?turma=7&utm_source=mail#inscricao"


def _click(campaign_id: int, recipient_id: int, url: str = DESTINATION, key: str = CURRENT_KEY) -> str:
    return path(links(key).click(campaign_id, recipient_id, url))


def _with_other_url(token: str, url: str) -> str:
    """The token with another destination in its payload and its original MAC."""
    payload, mac = token.split(".")
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    kind, campaign, recipient, _ = data.split(":", 3)
    altered = f"{kind}:{campaign}:{recipient}:{url}".encode()
    return f"{base64.urlsafe_b64encode(altered).rstrip(b'=').decode()}.{mac}"


@pytest.fixture
async def clicks(published: Published) -> Published:
    await published.listen(LinkClicked)
    return published


def _assert_redirects(response: httpx.Response, location: str) -> None:
    assert response.status_code == 302, response.text
    assert response.headers["location"] == location
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["referrer-policy"] == "no-referrer"


class TestClick:
    async def test_a_genuine_click_redirects_to_the_signed_destination_and_publishes_the_click(
        self, tracking: Tracking, clicks: Published
    ) -> None:
        _, client = tracking
        campaign_id, recipient_id = unique_id(), 17

        _assert_redirects(await client.get(_click(campaign_id, recipient_id)), DESTINATION)

        clicked = await clicks.next(LinkClicked)
        assert (clicked.campaign_id, clicked.recipient_id, clicked.url, clicked.machine) == (
            campaign_id,
            recipient_id,
            DESTINATION,
            False,
        )

    async def test_a_token_of_the_previous_key_and_an_anonymous_click_are_accepted(
        self, tracking: Tracking, clicks: Published
    ) -> None:
        _, client = tracking
        campaign_id = unique_id()

        _assert_redirects(await client.get(_click(campaign_id, ANONYMOUS, key=PREVIOUS_KEY)), DESTINATION)

        clicked = await clicks.next(LinkClicked)
        assert (clicked.campaign_id, clicked.recipient_id) == (campaign_id, ANONYMOUS)

    async def test_a_destination_with_non_ascii_characters_is_percent_encoded(
        self, tracking: Tracking, clicks: Published
    ) -> None:
        _, client = tracking

        response = await client.get(_click(unique_id(), 1, "https://example.org/ação?q=é"))

        _assert_redirects(response, "https://example.org/a%C3%A7%C3%A3o?q=%C3%A9")
        assert (await clicks.next(LinkClicked)).url == "https://example.org/ação?q=é"

    @pytest.mark.parametrize(
        "forged",
        [
            pytest.param(
                lambda c: _with_other_url(_click(c, 1).removeprefix("/c/"), "https://evil.example/"),
                id="altered-url",
            ),
            pytest.param(lambda c: _click(c, 1, key="someone-elses-key").removeprefix("/c/"), id="other-key"),
            pytest.param(
                lambda c: LinkSigner(CURRENT_KEY).sign(CLICK, c, 1, "javascript:alert(1)"), id="javascript"
            ),
            pytest.param(
                lambda c: LinkSigner(CURRENT_KEY).sign(CLICK, c, 1, "//evil.example/"), id="scheme-relative"
            ),
            pytest.param(lambda c: LinkSigner(CURRENT_KEY).sign(CLICK, c, 1, "/local/path"), id="relative"),
            pytest.param(
                lambda c: LinkSigner(CURRENT_KEY).sign(CLICK, c, 1, "https://a.example/\r\nX: y"), id="crlf"
            ),
            pytest.param(lambda c: LinkSigner(CURRENT_KEY).sign(CLICK, c, 1, "data:text/html,hi"), id="data"),
            pytest.param(lambda c: LinkSigner(CURRENT_KEY).sign("open", c, 1), id="open-token"),
            pytest.param(lambda c: "garbage", id="garbage"),
        ],
    )
    async def test_anything_but_a_genuine_click_token_is_a_plain_404_and_publishes_nothing(
        self, tracking: Tracking, clicks: Published, forged: Callable[[int], str]
    ) -> None:
        _, client = tracking

        response = await client.get(f"/c/{forged(unique_id())}")

        assert response.status_code == 404, response.text
        assert "location" not in response.headers
        assert response.headers["content-type"].startswith("text/plain")
        # Events leave in order, so a genuine click now is the first thing published.
        campaign_id = unique_id()
        _assert_redirects(await client.get(_click(campaign_id, 1)), DESTINATION)
        assert (await clicks.next(LinkClicked)).campaign_id == campaign_id


class TestMachineClicks:
    @pytest.mark.parametrize(
        "user_agent",
        [
            "Mozilla/5.0 (compatible; Barracuda Sentinel)",
            "Mimecast URL Protect",
            "Proofpoint URL Defense",
            "Mozilla/5.0 (compatible; bingbot/2.0)",
            "curl/8.5.0",
            "",
        ],
    )
    async def test_a_scanner_or_script_is_redirected_and_its_click_flagged(
        self, tracking: Tracking, clicks: Published, user_agent: str
    ) -> None:
        _, client = tracking

        _assert_redirects(
            await client.get(_click(unique_id(), 1), headers={"user-agent": user_agent}), DESTINATION
        )

        assert (await clicks.next(LinkClicked)).machine is True

    async def test_a_head_request_is_a_machine_click(self, tracking: Tracking, clicks: Published) -> None:
        _, client = tracking

        _assert_redirects(await client.head(_click(unique_id(), 1)), DESTINATION)

        assert (await clicks.next(LinkClicked)).machine is True

    async def test_other_links_of_one_delivery_followed_within_a_second_are_machine_clicks(
        self, tracking: Tracking, clicks: Published
    ) -> None:
        _, client = tracking
        campaign_id, other = unique_id(), unique_id()
        urls = [f"https://example.org/{n}" for n in range(3)]

        for url in urls:
            _assert_redirects(await client.get(_click(campaign_id, 5, url)), url)
        # Another delivery clicked meanwhile by the same client is no part of the burst.
        await client.get(_click(other, 5, urls[0]))

        flags = [
            (c.campaign_id, c.url, c.machine) for c in [await clicks.next(LinkClicked) for _ in range(4)]
        ]
        assert flags == [
            (campaign_id, urls[0], False),
            (campaign_id, urls[1], True),
            (campaign_id, urls[2], True),
            (other, urls[0], False),
        ]
