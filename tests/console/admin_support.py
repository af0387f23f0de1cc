"""Fixtures of the administration screens' tests: the campaign service with its console, talking
over HTTP to the real audience and bounce services running in-process (through httpx's ASGI
transport, so no port is opened), and a local file store of the test's own.

Test modules import the fixtures they use from here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.audience.app import create_app as create_audience
from services.audience.settings import AudienceSettings
from services.bounce.app import create_app as create_bounce
from services.bounce.settings import BounceSettings
from services.campaign.app import create_app
from services.campaign.audience_client import AudienceClient
from services.campaign.bounce_client import BounceClient
from services.campaign.settings import CampaignSettings
from shared.files import LocalFileStore
from tests.console.conftest import ADMIN_EMAIL, API_TOKEN, sign_in
from tests.support import running

__all__ = ["Person", "admin_app", "audience_app", "bounce_app", "db", "people", "service_api", "store_root"]


@pytest.fixture(scope="module")
async def audience_app(make_settings: Callable[..., Any]) -> AsyncIterator[FastAPI]:
    """The audience service, one per test module; remote groups may be on loopback."""
    settings = make_settings(
        AudienceSettings,
        CSV_MAX_BYTES=200_000,
        REMOTE_ALLOWED_NETWORKS=["127.0.0.0/8"],
        REMOTE_MAX_RETRIES=1,
        REMOTE_RETRY_BACKOFF=0.01,
    )
    app = create_audience(settings)
    async with running(app):
        yield app


@pytest.fixture(scope="module")
async def bounce_app(make_settings: Callable[..., Any]) -> AsyncIterator[FastAPI]:
    """The bounce service, one per test module."""
    app = create_bounce(make_settings(BounceSettings))
    async with running(app):
        yield app


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    """The file manager's directory of this test."""
    return tmp_path / "arquivos"


@pytest.fixture
async def admin_app(
    make_settings: Callable[..., Any], audience_app: FastAPI, bounce_app: FastAPI, store_root: Path
) -> AsyncIterator[FastAPI]:
    """The campaign service with its console, audience and bounce real behind HTTP."""
    audience = AudienceClient("http://audience", transport=httpx.ASGITransport(app=audience_app))
    settings = make_settings(
        CampaignSettings,
        CONSOLE_ADMIN_EMAILS=ADMIN_EMAIL,
        CAMPAIGN_API_TOKEN=API_TOKEN,
        FILE_STORE_URL=f"file://{store_root}",
    )
    app = create_app(settings, audience=audience)
    state = app.state.runtime.state
    state["bounce"] = BounceClient("http://bounce", transport=httpx.ASGITransport(app=bounce_app))
    state["files"] = LocalFileStore(store_root)
    async with running(app):
        yield app


@dataclass
class Person:
    """A signed-in browser (a cookie-keeping client) with its CSRF token and e-mail."""

    client: httpx.AsyncClient
    csrf: str
    email: str

    async def post(self, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        """A form post carrying the session's CSRF token."""
        return await self.client.post(url, data={"csrf_token": self.csrf, **(data or {})}, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """A page."""
        return await self.client.get(url, **kwargs)


@pytest.fixture
async def people(admin_app: FastAPI) -> AsyncIterator[tuple[Person, Person]]:
    """An administrator and a normal user (no sender addresses), signed in."""
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=admin_app), base_url="http://test")
        for _ in range(2)
    ]
    email = f"pessoa-{uuid.uuid4().hex[:8]}@console.test"
    admin = Person(clients[0], await sign_in(clients[0], ADMIN_EMAIL, "Chefe"), ADMIN_EMAIL)
    person = Person(clients[1], await sign_in(clients[1], email, "Pessoa Comum"), email)
    yield admin, person
    for client in clients:
        await client.aclose()


@pytest.fixture
async def service_api(admin_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The JSON API as another service calls it (bearer token)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=admin_app),
        base_url="http://test/api/v1",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own to the run's database."""
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def seed_campaign(
    db: asyncpg.Connection,
    *,
    account: str | None = None,
    status: str = "sending",
    priority: int = 5,
    name: str = "",
) -> tuple[int, int, int]:
    """A campaign of a new account's new sender address, written straight into campaign's tables
    (the screens read what the results recorded); returns (account_id, sender_address_id, campaign_id)."""
    tag = uuid.uuid4().hex[:8]
    account_id = await db.fetchval(
        "INSERT INTO campaign.accounts (name, transport, smtp_host, daily_quota) VALUES ($1, 'smtp', 'smtp.test', 1000)"
        " RETURNING account_id",
        account or f"Conta {tag}",
    )
    sender_id = await db.fetchval(
        "INSERT INTO campaign.sender_addresses (account_id, name, email) VALUES ($1, $2, $3) RETURNING sender_address_id",
        account_id,
        f"Remetente {tag}",
        f"r-{tag}@org.example.com",
    )
    campaign_id = await db.fetchval(
        "INSERT INTO campaign.campaigns (name, sender_address_id, subject, html, status, priority, recipients,"
        " started_at) VALUES ($1, $2, 'Assunto', '<p>oi</p>', $3, $4, 10, now()) RETURNING campaign_id",
        name or f"Campanha {tag}",
        sender_id,
        status,
        priority,
    )
    return account_id, sender_id, campaign_id
