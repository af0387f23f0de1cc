"""Fixtures of the console tests: the campaign service in-process with a stand-in for audience,
and browsers-without-a-browser (httpx clients) that sign in through the development login."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.campaign.app import create_app
from services.campaign.audience_client import AudienceClient
from services.campaign.settings import CampaignSettings
from tests.campaign.conftest import KNOWN_GROUPS
from tests.support import running

ADMIN_EMAIL = "chefe@console.test"
API_TOKEN = "console-tests-api-token"
# Audience's groups as the stand-in lists them (with the fields their members carry).
GROUPS = [
    {"group_id": 1, "name": "Equipe", "kind": "static", "members": 3, "fields": ["cidade"]},
    {"group_id": 2, "name": "Parceiros", "kind": "remote", "members": 0, "fields": []},
]


def _audience(request: httpx.Request) -> httpx.Response:
    """Audience's internal API as the console uses it: list, get and create groups."""
    path = request.url.path.rstrip("/")
    if request.method == "GET" and path.endswith("/groups"):
        after = int(request.url.params.get("after", 0))
        return httpx.Response(200, json=[g for g in GROUPS if g["group_id"] > after])
    if request.method == "GET":
        group_id = int(path.rsplit("/", 1)[1])
        if group_id in KNOWN_GROUPS:
            return httpx.Response(200, json=next(g for g in GROUPS if g["group_id"] == group_id))
        return httpx.Response(404, json={"detail": f"group {group_id} not found"})
    return httpx.Response(201, json={"group_id": 9})


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    match = _CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, email: str, name: str = "Pessoa Teste") -> str:
    """Sign in through the development login; returns the session's CSRF token."""
    page = await client.get("/console/entrar")
    response = await client.post(
        "/console/entrar", data={"name": name, "email": email, "csrf_token": csrf_of(page.text)}
    )
    assert response.status_code == 303, response.text
    home = await client.get("/console/campanhas")
    assert home.status_code == 200, home.text
    return csrf_of(home.text)


@pytest.fixture
async def console_app(make_settings: Callable[..., Any], tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The campaign service with its console; audience is a stand-in (groups 1 and 2 exist) and
    the file manager's store is a directory of the test's own (`<tmp_path>/files`)."""
    audience = AudienceClient("http://audience", transport=httpx.MockTransport(_audience))
    (tmp_path / "files").mkdir()
    settings = make_settings(
        CampaignSettings,
        CONSOLE_ADMIN_EMAILS=ADMIN_EMAIL,
        CAMPAIGN_API_TOKEN=API_TOKEN,
        FILE_STORE_URL=f"file://{tmp_path / 'files'}",
    )
    app = create_app(settings, audience=audience)
    async with running(app):
        yield app


@pytest.fixture
def browser(console_app: FastAPI) -> Callable[[], httpx.AsyncClient]:
    """Makes a new cookie-keeping client (one per person) on the console app."""
    clients: list[httpx.AsyncClient] = []

    def make() -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=console_app), base_url="http://test")
        clients.append(client)
        return client

    return make


@pytest.fixture
def service_api(console_app: FastAPI) -> httpx.AsyncClient:
    """The JSON API as another service calls it (bearer token)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=console_app),
        base_url="http://test/api/v1",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
