"""Single sign-on end to end: the console against the local OpenID Connect issuer
(devtools.oidc_issuer) over real HTTP: discovery, authorize, code exchange, RS256 ID token
checked against the issuer's JWKS and the nonce, then a session of the right user and role."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from devtools.oidc_issuer import RunningIssuer
from devtools.smtp_sink import free_port
from services.campaign.app import create_app
from services.campaign.settings import CampaignSettings
from tests.console.conftest import ADMIN_EMAIL
from tests.support import running

CLIENT_ID, CLIENT_SECRET = "console", "segredo-de-teste"


@pytest.fixture(scope="module")
def issuer() -> Iterator[RunningIssuer]:
    """The local issuer on a free port, one per module."""
    server = RunningIssuer(free_port(), {CLIENT_ID: CLIENT_SECRET}).start()
    yield server
    server.stop()


@pytest.fixture
async def sso_app(make_settings: Callable[..., Any], issuer: RunningIssuer) -> AsyncIterator[FastAPI]:
    """The campaign service with single sign-on configured."""
    settings = make_settings(
        CampaignSettings,
        OIDC_ISSUER_URL=issuer.url,
        OIDC_CLIENT_ID=CLIENT_ID,
        OIDC_CLIENT_SECRET=CLIENT_SECRET,
        CONSOLE_ADMIN_EMAILS=ADMIN_EMAIL,
    )
    app = create_app(settings)
    async with running(app):
        yield app


def _console(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _sign_in(
    console: httpx.AsyncClient, name: str, email: str, next_path: str = "/console/campanhas"
) -> httpx.Response:
    """Click "Entrar com login único", fill the issuer's page, come back to the console."""
    start = await console.get("/console/entrar/sso", params={"next": next_path})
    assert start.status_code == 302, start.text
    authorize_url = start.headers["location"]
    async with httpx.AsyncClient(timeout=10) as idp:
        page = await idp.get(authorize_url)
        assert page.status_code == 200 and "Login único" in page.text
        fields = re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page.text)
        hidden = {key: html.unescape(value) for key, value in fields}
        answer = await idp.post(authorize_url.split("?")[0], data={**hidden, "name": name, "email": email})
    assert answer.status_code == 302, answer.text
    back = answer.headers["location"]
    assert back.startswith("http://test/console/entrar/retorno?")
    return await console.get(back.removeprefix("http://test"))


class TestSingleSignOn:
    async def test_the_login_page_offers_single_sign_on_and_no_development_form(
        self, sso_app: FastAPI
    ) -> None:
        async with _console(sso_app) as console:
            page = (await console.get("/console/entrar")).text
            assert "Entrar com login único" in page and 'name="email"' not in page
            refused = await console.post("/console/entrar", data={"name": "x", "email": "x@console.test"})
            assert refused.status_code in (403, 404)

    async def test_round_trip_signs_in_with_the_id_tokens_name_and_email(
        self, sso_app: FastAPI, issuer: RunningIssuer
    ) -> None:
        async with _console(sso_app) as console:
            done = await _sign_in(console, "Maria Administradora", ADMIN_EMAIL, "/console/campanhas?q=abc")
            assert done.status_code == 303, done.text
            assert done.headers["location"] == "/console/campanhas?q=abc"
            page = (await console.get("/console/campanhas")).text
            assert "Maria Administradora" in page and "Administrador" in page
        async with sso_app.state.runtime.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT name, role, subject FROM users WHERE email = $1", ADMIN_EMAIL)
        assert row["name"] == "Maria Administradora" and row["role"] == "admin" and row["subject"]

    async def test_a_normal_user_comes_in_as_normal(self, sso_app: FastAPI) -> None:
        async with _console(sso_app) as console:
            await _sign_in(console, "João", "joao@console.test")
            page = (await console.get("/console/campanhas")).text
            assert "João" in page and "badge-admin" not in page

    async def test_a_forged_state_or_a_replayed_code_is_refused(self, sso_app: FastAPI) -> None:
        async with _console(sso_app) as console:
            start = await console.get("/console/entrar/sso")
            query = parse_qs(urlsplit(start.headers["location"]).query)
            async with httpx.AsyncClient(timeout=10) as idp:
                answer = await idp.post(
                    start.headers["location"].split("?")[0],
                    data={
                        **{k: v[0] for k, v in query.items()},
                        "name": "Intrusa",
                        "email": "intrusa@console.test",
                    },
                )
            code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
            forged = await console.get("/console/entrar/retorno", params={"code": code, "state": "forjado"})
            assert forged.status_code == 400 and "Não foi possível entrar" in forged.text
            assert (await console.get("/console/campanhas")).status_code == 303
        async with _console(sso_app) as other:
            stranger = await other.get(
                "/console/entrar/retorno", params={"code": code, "state": query["state"][0]}
            )
            assert stranger.status_code == 400
