"""The pixel and the redirect are answered as plain ASGI (`HotPaths`), ahead of Starlette: their
answers must still be what Starlette's responses would be for the same content, and other methods
and paths must still be refused or reach the rest of the service."""

from __future__ import annotations

import httpx
import pytest
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from services.tracking.api import _NO_CACHE, _REDIRECT_HEADERS, PIXEL
from shared.contracts import LinkClicked, MessageOpened
from tests.support import eventually, unique_id
from tests.tracking.conftest import Published, Tracking, links, path

pytestmark = pytest.mark.connected

# Non-ASCII characters, a query and a fragment: what the Location header must encode.
DESTINATION = "https://example.org/inscrição?turma=7&nome=José#topo"


def _headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    return sorted(response.headers.raw)


def _starlette(response: Response) -> list[tuple[bytes, bytes]]:
    return sorted(response.raw_headers)


class TestHotPathAnswers:
    async def test_the_pixel_is_what_starlettes_response_would_send(self, tracking: Tracking) -> None:
        _, client = tracking

        response = await client.get(path(links().open_pixel(unique_id(), 1)))

        assert response.status_code == 200
        assert response.content == PIXEL
        assert _headers(response) == _starlette(Response(PIXEL, media_type="image/gif", headers=_NO_CACHE))

    async def test_the_redirect_is_what_starlettes_redirect_would_send(self, tracking: Tracking) -> None:
        _, client = tracking

        response = await client.get(path(links().click(unique_id(), 1, DESTINATION)))

        expected = RedirectResponse(DESTINATION, status_code=302, headers=_REDIRECT_HEADERS)
        assert response.status_code == 302
        assert response.content == b""
        assert _headers(response) == _starlette(expected)

    @pytest.mark.parametrize("kind", ["pixel", "click"])
    async def test_a_forged_token_gets_starlettes_plain_404(self, tracking: Tracking, kind: str) -> None:
        _, client = tracking
        forged = (
            "/o/bm90LWEtdG9rZW4.c2lnbmF0dXJl.gif" if kind == "pixel" else "/c/bm90LWEtdG9rZW4.c2lnbmF0dXJl"
        )

        response = await client.get(forged)

        assert response.status_code == 404
        assert response.text == "Not found"
        assert _headers(response) == _starlette(PlainTextResponse("Not found", status_code=404))

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
    async def test_other_methods_are_refused_and_record_nothing(
        self, tracking: Tracking, published: Published, method: str
    ) -> None:
        _, client = tracking
        await published.listen(MessageOpened)
        await published.listen(LinkClicked)
        campaign_id = unique_id()

        for url in (links().open_pixel(campaign_id, 1), links().click(campaign_id, 1, DESTINATION)):
            response = await client.request(method, path(url))
            assert response.status_code == 405
            assert response.headers["allow"] == "GET, HEAD"

        # A genuine open and click now: once they arrived, they are this campaign's only ones
        # (the run's other tests publish too, so only this campaign's events are looked at).
        await client.get(path(links().open_pixel(campaign_id, 2)))
        await client.get(path(links().click(campaign_id, 2, DESTINATION)))
        arrived: list[MessageOpened | LinkClicked] = []

        async def both_arrived() -> bool:
            arrived.extend(await published.arrived(MessageOpened))
            arrived.extend(await published.arrived(LinkClicked))
            return {type(e) for e in arrived if e.campaign_id == campaign_id} == {MessageOpened, LinkClicked}

        await eventually(both_arrived)
        assert [e.recipient_id for e in arrived if e.campaign_id == campaign_id] == [2, 2]

    @pytest.mark.parametrize("url", ["/o/.gif", "/o/a/b.gif", "/c/", "/c/a/b", "/o/token"])
    async def test_paths_without_one_token_segment_go_on_to_the_service(
        self, tracking: Tracking, url: str
    ) -> None:
        _, client = tracking

        response = await client.get(url)

        # FastAPI's own 404 (JSON), not the hot paths' plain one.
        assert response.status_code == 404
        assert response.json() == {"detail": "Not Found"}

    async def test_the_rest_of_the_service_is_still_served(self, tracking: Tracking) -> None:
        _, client = tracking

        assert (await client.get("/healthz")).status_code == 200
