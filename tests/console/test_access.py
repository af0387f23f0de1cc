"""Who may do what: the console's login, sessions and CSRF, and the /api/v1 rules for services
(bearer token), administrators and normal users (only the campaigns of their sender addresses)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.campaign.console.repository import AuditRepository, UserRepository
from services.campaign.console.templating import NAV
from tests.console.conftest import ADMIN_EMAIL, csrf_of, sign_in


async def _sender(api: httpx.AsyncClient, name: str) -> int:
    account = await api.post(
        "/accounts",
        json={"name": f"{name}-{uuid.uuid4().hex[:8]}", "transport": "smtp", "smtp": {"host": "127.0.0.1"}},
    )
    assert account.status_code == 201, account.text
    sender = await api.post(
        "/sender-addresses",
        json={
            "account_id": account.json()["account_id"],
            "name": name,
            "email": f"{uuid.uuid4().hex[:8]}@envio.example",
        },
    )
    assert sender.status_code == 201, sender.text
    sender_id: int = sender.json()["sender_address_id"]
    return sender_id


async def _campaign(api: httpx.AsyncClient, sender_id: int, name: str) -> int:
    response = await api.post(
        "/campaigns",
        json={
            "name": name,
            "sender_address_id": sender_id,
            "group_ids": [1],
            "subject": "Olá {{ name }}",
            "html": "<p>Olá</p>",
        },
    )
    assert response.status_code == 201, response.text
    campaign_id: int = response.json()["campaign_id"]
    return campaign_id


async def _link(app: FastAPI, email: str, sender_ids: list[int]) -> None:
    async with app.state.runtime.pool.acquire() as conn:
        user_id = await conn.fetchval("SELECT user_id FROM users WHERE lower(email) = lower($1)", email)
        await UserRepository(conn).set_senders(user_id, sender_ids)


@pytest.fixture
async def world(
    console_app: FastAPI, service_api: httpx.AsyncClient, browser: Callable[[], httpx.AsyncClient]
) -> Any:
    """Two senders with a campaign each; a normal user linked to the first, and an administrator."""
    mine, theirs = await _sender(service_api, "Meu"), await _sender(service_api, "Outro")
    normal_email = f"normal-{uuid.uuid4().hex[:6]}@console.test"
    normal = browser()
    normal_csrf = await sign_in(normal, normal_email, "Pessoa Normal")
    await _link(console_app, normal_email, [mine])
    admin = browser()
    admin_csrf = await sign_in(admin, ADMIN_EMAIL, "Chefe")

    class World:
        pass

    w = World()
    w.mine, w.theirs = mine, theirs  # type: ignore[attr-defined]
    w.my_campaign = await _campaign(service_api, mine, "Minha campanha")  # type: ignore[attr-defined]
    w.their_campaign = await _campaign(service_api, theirs, "Campanha alheia")  # type: ignore[attr-defined]
    w.normal, w.normal_csrf, w.normal_email = normal, normal_csrf, normal_email  # type: ignore[attr-defined]
    w.admin, w.admin_csrf = admin, admin_csrf  # type: ignore[attr-defined]
    return w


class TestTheServiceToken:
    async def test_no_token_or_a_wrong_one_is_401(self, console_app: FastAPI) -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=console_app), base_url="http://test"
        ) as c:
            assert (await c.get("/api/v1/campaigns")).status_code == 401
            wrong = await c.get("/api/v1/campaigns", headers={"Authorization": "Bearer not-the-token"})
            assert wrong.status_code == 401
            assert (await c.post("/api/v1/accounts", json={})).status_code == 401

    async def test_probes_and_metrics_stay_open(self, console_app: FastAPI) -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=console_app), base_url="http://test"
        ) as c:
            for path in ("/healthz", "/readyz", "/metrics"):
                assert (await c.get(path)).status_code == 200, path

    async def test_the_token_acts_as_an_administrator(
        self, world: Any, service_api: httpx.AsyncClient
    ) -> None:
        assert (await service_api.get("/accounts")).status_code == 200
        assert (await service_api.get("/api-keys")).status_code == 200
        ids = {c["campaign_id"] for c in (await service_api.get("/campaigns", params={"limit": 500})).json()}
        assert {world.my_campaign, world.their_campaign} <= ids


class TestANormalUsersSession:
    async def test_sees_only_the_campaigns_of_their_senders(self, world: Any) -> None:
        listed = (await world.normal.get("/api/v1/campaigns", params={"limit": 500})).json()
        ids = {c["campaign_id"] for c in listed}
        assert world.my_campaign in ids and world.their_campaign not in ids
        assert (await world.normal.get(f"/api/v1/campaigns/{world.my_campaign}")).status_code == 200
        assert (await world.normal.get(f"/api/v1/campaigns/{world.their_campaign}")).status_code == 404
        results = await world.normal.get(f"/api/v1/campaigns/{world.their_campaign}/results")
        assert results.status_code == 404
        senders = (await world.normal.get("/api/v1/sender-addresses")).json()
        assert [s["sender_address_id"] for s in senders] == [world.mine]

    async def test_cannot_act_on_another_senders_campaign(self, world: Any) -> None:
        headers = {"X-CSRF-Token": world.normal_csrf}
        response = await world.normal.post(
            f"/api/v1/campaigns/{world.their_campaign}/cancel", headers=headers
        )
        assert response.status_code == 404
        created = await world.normal.post(
            "/api/v1/campaigns",
            headers=headers,
            json={
                "name": "x",
                "sender_address_id": world.theirs,
                "group_ids": [1],
                "subject": "s",
                "html": "<p>h</p>",
            },
        )
        assert created.status_code == 422
        assert created.json()["detail"][0]["loc"] == ["body", "sender_address_id"]

    async def test_may_act_on_their_own_with_the_csrf_header(self, world: Any) -> None:
        path = f"/api/v1/campaigns/{world.my_campaign}/cancel"
        assert (await world.normal.post(path)).status_code == 403  # no CSRF header
        response = await world.normal.post(path, headers={"X-CSRF-Token": world.normal_csrf})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"

    async def test_is_refused_the_administrative_apis(self, world: Any) -> None:
        headers = {"X-CSRF-Token": world.normal_csrf}
        assert (await world.normal.get("/api/v1/accounts")).status_code == 403
        assert (await world.normal.get("/api/v1/api-keys")).status_code == 403
        assert (await world.normal.get("/api/v1/api-sends")).status_code == 403
        new_sender = await world.normal.post(
            "/api/v1/sender-addresses",
            headers=headers,
            json={"account_id": 1, "name": "x", "email": "x@envio.example"},
        )
        assert new_sender.status_code == 403

    async def test_is_refused_the_administration_screens(self, world: Any, console_app: FastAPI) -> None:
        page = await world.normal.get("/console/campanhas")
        admin_only = [item.href for item in NAV if item.admin]
        for href in admin_only:
            assert f'href="{href}"' not in page.text
            response = await world.normal.get(href)
            # A screen not built yet is 404; a built one must be 403 for a normal user.
            assert response.status_code in (403, 404), href
            if response.status_code == 403:
                assert "restrita a administradores" in response.text

    async def test_an_administrator_may_use_the_admin_apis(self, world: Any) -> None:
        assert (await world.admin.get("/api/v1/accounts")).status_code == 200
        ids = {
            c["campaign_id"]
            for c in (await world.admin.get("/api/v1/campaigns", params={"limit": 500})).json()
        }
        assert {world.my_campaign, world.their_campaign} <= ids


class TestLogin:
    async def test_anonymous_visitors_are_sent_to_the_login_page(
        self, browser: Callable[[], httpx.AsyncClient]
    ) -> None:
        client = browser()
        response = await client.get("/console/campanhas?q=x")
        assert response.status_code == 303
        assert response.headers["location"] == "/console/entrar?next=/console/campanhas?q=x"
        htmx = await client.get("/console/campanhas", headers={"HX-Request": "true"})
        assert htmx.headers["HX-Redirect"].startswith("/console/entrar")

    async def test_bad_input_is_shown_next_to_the_field_and_kept(
        self, browser: Callable[[], httpx.AsyncClient]
    ) -> None:
        client = browser()
        page = await client.get("/console/entrar")
        response = await client.post(
            "/console/entrar", data={"name": "", "email": "não-é-email", "csrf_token": csrf_of(page.text)}
        )
        assert response.status_code == 422
        assert "Informe o nome." in response.text and "Informe um e-mail válido." in response.text
        assert 'value="não-é-email"' in response.text

    async def test_a_form_without_the_csrf_token_is_refused(
        self, browser: Callable[[], httpx.AsyncClient]
    ) -> None:
        client = browser()
        await client.get("/console/entrar")
        response = await client.post("/console/entrar", data={"name": "A", "email": "a@console.test"})
        assert response.status_code == 403
        assert "Formulário expirado" in response.text

    async def test_configured_admins_become_administrators_and_others_normal(
        self, console_app: FastAPI, browser: Callable[[], httpx.AsyncClient]
    ) -> None:
        admin, normal = browser(), browser()
        await sign_in(admin, ADMIN_EMAIL.upper(), "Chefe")
        await sign_in(normal, "alguem@console.test", "Alguém")
        assert "Administrador" in (await admin.get("/console/campanhas")).text
        page = (await normal.get("/console/campanhas")).text
        assert "badge-admin" not in page and "Alguém" in page
        async with console_app.state.runtime.pool.acquire() as conn:
            roles = dict(
                await conn.fetch("SELECT lower(email), role FROM users WHERE email ILIKE '%console.test'")
            )
        assert roles[ADMIN_EMAIL] == "admin" and roles["alguem@console.test"] == "normal"

    async def test_next_never_leaves_the_site(self, browser: Callable[[], httpx.AsyncClient]) -> None:
        client = browser()
        page = await client.get("/console/entrar")
        response = await client.post(
            "/console/entrar",
            data={
                "name": "A",
                "email": "a@console.test",
                "next": "//evil.example/",
                "csrf_token": csrf_of(page.text),
            },
        )
        assert response.headers["location"] == "/console/campanhas"

    async def test_logout_ends_the_session(self, browser: Callable[[], httpx.AsyncClient]) -> None:
        client = browser()
        csrf = await sign_in(client, "sai@console.test")
        assert (await client.post("/console/sair", data={"csrf_token": csrf})).status_code == 303
        assert (await client.get("/console/campanhas")).status_code == 303

    async def test_a_removed_users_session_ends(
        self, console_app: FastAPI, browser: Callable[[], httpx.AsyncClient]
    ) -> None:
        client = browser()
        await sign_in(client, "removido@console.test")
        async with console_app.state.runtime.pool.acquire() as conn:
            await conn.execute("DELETE FROM users WHERE email = 'removido@console.test'")
        assert (await client.get("/console/campanhas")).status_code == 303


class TestAudit:
    async def test_administrative_api_actions_are_recorded(self, console_app: FastAPI, world: Any) -> None:
        response = await world.admin.post(
            f"/api/v1/accounts/{1}/pause",
            headers={"X-CSRF-Token": world.admin_csrf},
            json={"reason": "teste"},
        )
        assert response.status_code in (202, 404)
        async with console_app.state.runtime.pool.acquire() as conn:
            entries = await AuditRepository(conn).latest(50)
        created = [e for e in entries if e.action == "account.created"]
        assert created and created[0].actor == "service" and created[0].target
        if response.status_code == 202:
            paused = next(e for e in entries if e.action == "account.paused")
            assert paused.actor == ADMIN_EMAIL and paused.details == {"reason": "teste"}
