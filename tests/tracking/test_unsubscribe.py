"""Unsubscribing: the page (pt-BR), its form for both scopes, RFC 8058 one-click, and forged
tokens. An accepted unsubscribe is kept in tracking's table and announced once per scope."""

from __future__ import annotations

import re
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from services.tracking.forms import MAX_FORM_BYTES
from shared.contracts import UnsubscribeRequested
from shared.links import ANONYMOUS, UNSUBSCRIBE, LinkSigner
from tests.support import unique_id
from tests.tracking.conftest import CURRENT_KEY, Published, Tracking, links, path

pytestmark = pytest.mark.connected

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _page(campaign_id: int, recipient_id: int, key: str = CURRENT_KEY) -> str:
    return path(links(key).unsubscribe(campaign_id, recipient_id))


@pytest.fixture
async def requests(published: Published) -> Published:
    await published.listen(UnsubscribeRequested)
    return published


async def _kept(db: asyncpg.Connection, campaign_id: int) -> list[tuple[int, str, str, str]]:
    rows = await db.fetch(
        "SELECT recipient_id, scope, reason, method FROM tracking.unsubscribes WHERE campaign_id = $1"
        " ORDER BY scope",
        campaign_id,
    )
    return [(r["recipient_id"], r["scope"], r["reason"], r["method"]) for r in rows]


class TestPage:
    async def test_the_page_offers_both_scopes_and_a_reason_in_portuguese_and_changes_nothing(
        self, tracking: Tracking, db: asyncpg.Connection
    ) -> None:
        _, client = tracking
        campaign_id = unique_id()

        response = await client.get(_page(campaign_id, 3))

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert '<html lang="pt-BR">' in html
        for text in (
            "Cancelar inscrição",
            "Apenas desta campanha",
            "De todas as campanhas futuras",
            "Motivo (opcional)",
        ):
            assert text in html
        assert '<form method="post">' in html
        assert html.count('type="radio" name="scope"') == 2
        assert "<script" not in html
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
        assert await _kept(db, campaign_id) == []


class TestForm:
    @pytest.mark.parametrize(
        ("scope", "confirmation"),
        [
            ("campaign", "Você não receberá mais mensagens desta campanha."),
            ("all", "Você não receberá mais nenhuma das nossas campanhas futuras."),
        ],
    )
    async def test_the_choice_is_kept_confirmed_in_portuguese_and_announced(
        self, tracking: Tracking, requests: Published, db: asyncpg.Connection, scope: str, confirmation: str
    ) -> None:
        _, client = tracking
        campaign_id = unique_id()

        response = await client.post(
            _page(campaign_id, 42), data={"scope": scope, "reason": "  Muitos\ne-mails \x00por semana "}
        )

        assert response.status_code == 200, response.text
        assert "Inscrição cancelada" in response.text
        assert confirmation in response.text
        assert re.search(
            r"Pedido registrado em \d\d/\d\d/\d{4} \d\d:\d\d:\d\d \(horário de Brasília\)", response.text
        )
        assert await _kept(db, campaign_id) == [(42, scope, "Muitos e-mails por semana", "page")]
        requested = await requests.next(UnsubscribeRequested)
        assert (requested.campaign_id, requested.recipient_id, requested.scope, requested.reason) == (
            campaign_id,
            42,
            scope,
            "Muitos e-mails por semana",
        )

    async def test_asking_again_keeps_the_first_request_and_announces_nothing_new(
        self, tracking: Tracking, requests: Published, db: asyncpg.Connection
    ) -> None:
        _, client = tracking
        campaign_id = unique_id()
        first = await client.post(_page(campaign_id, 1), data={"scope": "all", "reason": "primeiro"})
        await requests.next(UnsubscribeRequested)

        again = await client.post(_page(campaign_id, 1), data={"scope": "all", "reason": "segundo"})
        one_click = await client.post(_page(campaign_id, 1), data=ONE_CLICK)

        assert (again.status_code, one_click.status_code) == (200, 200)
        date = re.compile(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d")
        assert date.findall(again.text) == date.findall(first.text)
        assert await _kept(db, campaign_id) == [(1, "all", "primeiro", "page")]
        # A later request of the other scope is news; it arrives first, so nothing came before it.
        await client.post(_page(campaign_id, 1), data={"scope": "campaign"})
        assert (await requests.next(UnsubscribeRequested)).scope == "campaign"

    async def test_a_form_without_a_choice_asks_again_keeping_the_reason(
        self, tracking: Tracking, db: asyncpg.Connection
    ) -> None:
        _, client = tracking
        campaign_id = unique_id()

        for data in (
            {"reason": "<b>sem escolha</b>"},
            {"scope": "everything", "reason": "<b>sem escolha</b>"},
        ):
            response = await client.post(_page(campaign_id, 1), data=data)
            assert response.status_code == 400
            assert "Escolha uma das opções abaixo para continuar." in response.text
            assert "&lt;b&gt;sem escolha&lt;/b&gt;</textarea>" in response.text
        assert await _kept(db, campaign_id) == []

    async def test_a_body_too_large_is_refused(self, tracking: Tracking, db: asyncpg.Connection) -> None:
        _, client = tracking
        campaign_id = unique_id()

        response = await client.post(
            _page(campaign_id, 1), data={"scope": "all", "reason": "x" * (MAX_FORM_BYTES + 1)}
        )

        assert response.status_code == 413
        assert await _kept(db, campaign_id) == []


class TestOneClick:
    async def test_a_one_click_post_unsubscribes_from_every_future_campaign_with_a_bare_200(
        self, tracking: Tracking, requests: Published, db: asyncpg.Connection
    ) -> None:
        _, client = tracking
        campaign_id = unique_id()

        response = await client.post(_page(campaign_id, 9), data=ONE_CLICK)

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert await _kept(db, campaign_id) == [(9, "all", "", "one_click")]
        requested = await requests.next(UnsubscribeRequested)
        assert (requested.campaign_id, requested.recipient_id, requested.scope) == (campaign_id, 9, "all")

    async def test_a_multipart_one_click_post_works_too(
        self, tracking: Tracking, requests: Published, db: asyncpg.Connection
    ) -> None:
        _, client = tracking
        campaign_id = unique_id()
        body = (
            b"--XyZ\r\n"
            b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            b"One-Click\r\n"
            b"--XyZ--\r\n"
        )

        response = await client.post(
            _page(campaign_id, 9), content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"}
        )

        assert response.status_code == 200
        assert await _kept(db, campaign_id) == [(9, "all", "", "one_click")]
        assert (await requests.next(UnsubscribeRequested)).campaign_id == campaign_id


class TestForgedTokens:
    @pytest.mark.parametrize(
        "forged",
        [
            pytest.param(lambda c: _page(c, 1, key="someone-elses-key"), id="other-key"),
            pytest.param(lambda c: _page(c, 1)[:-2], id="truncated"),
            pytest.param(
                lambda c: f"/u/{LinkSigner(CURRENT_KEY).sign(UNSUBSCRIBE, c, ANONYMOUS)}", id="anonymous"
            ),
            pytest.param(lambda c: f"/u/{LinkSigner(CURRENT_KEY).sign('open', c, 1)}", id="open-token"),
            pytest.param(lambda c: "/u/garbage", id="garbage"),
        ],
    )
    async def test_a_forged_token_is_a_plain_404_for_the_page_the_form_and_one_click(
        self,
        tracking: Tracking,
        requests: Published,
        db: asyncpg.Connection,
        forged: Callable[[int], str],
    ) -> None:
        _, client = tracking
        campaign_id = unique_id()
        url = forged(campaign_id)

        responses: list[httpx.Response] = [
            await client.get(url),
            await client.post(url, data={"scope": "all"}),
            await client.post(url, data=ONE_CLICK),
        ]

        for response in responses:
            assert (response.status_code, response.text) == (404, "Not found")
            assert response.headers["content-type"].startswith("text/plain")
        assert await _kept(db, campaign_id) == []
        assert await requests.arrived(UnsubscribeRequested) == []
