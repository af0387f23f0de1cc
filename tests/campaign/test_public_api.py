"""The public API of sends (`/public/v1`) and its admin endpoints: keys, routing, templates,
idempotency, bad input answered with a clear 4xx and nothing half-created, rate limits."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.campaign.api_keys import RateLimiter
from shared.contracts import utc_now

pytestmark = pytest.mark.connected


@pytest.fixture(autouse=True)
def _as_a_service(api: httpx.AsyncClient) -> None:
    """The admin endpoints answer administrators: the internal service token is one."""
    settings = api.app.state.runtime.settings  # type: ignore[attr-defined]
    api.headers["Authorization"] = f"Bearer {settings.CAMPAIGN_API_TOKEN}"


PUBLIC = "http://test/public/v1"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _sender(api: httpx.AsyncClient, email: str | None = None) -> dict[str, Any]:
    account = await api.post(
        "/accounts",
        json={"name": _unique("conta"), "transport": "smtp", "smtp": {"host": "smtp.example", "port": 587}},
    )
    assert account.status_code == 201, account.text
    sender = await api.post(
        "/sender-addresses",
        json={
            "account_id": account.json()["account_id"],
            "name": "Polo",
            "email": email or f"{_unique('avisos')}@polo.example",
        },
    )
    assert sender.status_code == 201, sender.text
    return dict(sender.json())


async def _key(api: httpx.AsyncClient, system: str, senders: list[int], **extra: Any) -> dict[str, Any]:
    response = await api.post(
        "/api-keys", json={"system": system, "name": "portal", "sender_address_ids": senders} | extra
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _auth(key: dict[str, Any], idempotency_key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key['token']}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def _send(**overrides: Any) -> dict[str, Any]:
    return {
        "recipients": [
            {"email": "ana@example.org", "name": "Ana"},
            {"email": "bruno@example.org", "name": "Bruno", "fields": {"curso": "Física"}},
        ],
        "subject": "Aviso para {{ nome }}",
        "html": "<p>Olá {{ nome }}, {{ prazo }}</p>",
        "variables": {"prazo": "até sexta"},
    } | overrides


async def _count(db: asyncpg.Connection, system: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM campaign.api_sends WHERE system = $1", system))


class TestApiKeys:
    async def test_a_key_is_shown_once_stored_hashed_and_revocable(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        sender = await _sender(api)
        system = _unique("polo")
        key = await _key(api, system, [sender["sender_address_id"]])
        assert key["token"].startswith("mlr_") and key["sender_address_ids"] == [sender["sender_address_id"]]
        listed = {k["api_key_id"]: k for k in (await api.get("/api-keys")).json()}
        assert "token" not in listed[key["api_key_id"]]
        stored = await db.fetchval(
            "SELECT token_sha256 FROM campaign.api_keys WHERE api_key_id = $1", key["api_key_id"]
        )
        assert key["token"].encode() not in bytes(stored)
        assert (await api.get(f"{PUBLIC}/sends", headers=_auth(key))).status_code == 200
        assert (await api.post(f"/api-keys/{key['api_key_id']}/revoke")).json()["revoked_at"] is not None
        refused = await api.get(f"{PUBLIC}/sends", headers=_auth(key))
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"

    async def test_admin_endpoints_need_the_admin(self, api: httpx.AsyncClient) -> None:
        anonymous = {"Authorization": ""}
        for method, path in (
            ("POST", "/api-keys"),
            ("GET", "/api-keys"),
            ("GET", "/api-sends"),
            ("GET", "/templates"),
        ):
            response = await api.request(method, path, json={}, headers=anonymous)
            assert response.status_code == 401, (method, path)

    async def test_no_key_or_a_wrong_one_is_401(self, api: httpx.AsyncClient) -> None:
        assert (await api.get(f"{PUBLIC}/sends")).status_code == 401
        assert (await api.get(f"{PUBLIC}/sends", headers={"X-API-Key": "mlr_x_y"})).status_code == 401

    async def test_x_api_key_header_works_too(self, api: httpx.AsyncClient) -> None:
        key = await _key(api, _unique("polo"), [])
        assert (await api.get(f"{PUBLIC}/sends", headers={"X-API-Key": key["token"]})).status_code == 200

    async def test_over_the_rate_429_with_retry_after(self, api: httpx.AsyncClient) -> None:
        key = await _key(api, _unique("polo"), [], rate_per_minute=2)
        codes = [(await api.get(f"{PUBLIC}/sends", headers=_auth(key))) for _ in range(3)]
        assert [c.status_code for c in codes] == [200, 200, 429]
        assert int(codes[2].headers["retry-after"]) >= 1


class TestDocument:
    async def test_the_public_openapi_document_has_only_the_public_api(self, api: httpx.AsyncClient) -> None:
        document = (await api.get(f"{PUBLIC}/openapi.json")).json()
        assert document["info"]["title"] == "Mailer public API"
        assert (
            "/public/v1/sends" in document["paths"]
            and "/public/v1/sends/{send_id}/results" in document["paths"]
        )
        assert all(path.startswith("/public/v1/") for path in document["paths"])
        schemes = document["components"]["securitySchemes"]
        assert {"HTTPBearer", "APIKeyHeader"} <= set(schemes)
        assert (await api.get(f"{PUBLIC}/docs")).status_code == 200


class TestRateLimiter:
    def test_refills_with_time(self) -> None:
        now = [0.0]
        limiter = RateLimiter(clock=lambda: now[0])
        assert limiter.acquire(1, 60) == 0 and all(limiter.acquire(1, 60) == 0 for _ in range(59))
        assert limiter.acquire(1, 60) == pytest.approx(1.0)
        now[0] = 1.0
        assert limiter.acquire(1, 60) == 0
        assert limiter.acquire(2, 60) == 0  # each key its own bucket


class TestCreateSend:
    async def test_inline_send_becomes_an_api_campaign_with_its_recipients(
        self, api: httpx.AsyncClient, db: asyncpg.Connection, events: Any
    ) -> None:
        await events.listen("campaign.started")
        sender = await _sender(api)
        system = _unique("polo")
        key = await _key(api, system, [sender["sender_address_id"]])
        created = await api.post(
            f"{PUBLIC}/sends", json=_send(sender=sender["email"]), headers=_auth(key, "k-1")
        )
        assert created.status_code == 201, created.text
        send = created.json()
        assert send["status"] == "queued" and send["sender"] == sender["email"] and send["channel"] == "http"
        origin = await db.fetchval(
            "SELECT origin FROM campaign.campaigns WHERE campaign_id = $1", send["campaign_id"]
        )
        assert origin == "api"

        async def started() -> list[dict[str, Any]]:
            return [e for e in await events("campaign.started") if e["campaign_id"] == send["campaign_id"]]

        from tests.support import eventually

        [event] = await eventually(started)
        assert [r["email"] for r in event["recipients"]] == ["ana@example.org", "bruno@example.org"]
        assert event["group_ids"] == []
        assert event["html"].startswith('{% set prazo = "at\\u00e9 sexta" %}')

        again = await api.post(
            f"{PUBLIC}/sends", json=_send(sender=sender["email"]), headers=_auth(key, "k-1")
        )
        assert again.status_code == 200 and again.json()["send_id"] == send["send_id"]
        reused = await api.post(
            f"{PUBLIC}/sends", json=_send(sender=sender["email"], subject="Outro"), headers=_auth(key, "k-1")
        )
        assert reused.status_code == 409 and reused.json()["code"] == "idempotency_conflict"
        assert await _count(db, system) == 1

        shown = await api.get(f"{PUBLIC}/sends/{send['send_id']}", headers=_auth(key))
        assert shown.status_code == 200 and shown.json()["totals"]["recipients"] is None
        listing = (await api.get("/api-sends", params={"system": system})).json()
        assert [s["send_id"] for s in listing] == [send["send_id"]] and listing[0]["opens"] == 0
        results = await api.get(f"{PUBLIC}/sends/{send['send_id']}/results", headers=_auth(key))
        assert results.status_code == 200 and results.json()["items"] == []

    async def test_another_systems_send_is_not_found(self, api: httpx.AsyncClient) -> None:
        sender = await _sender(api)
        mine = await _key(api, _unique("polo"), [sender["sender_address_id"]])
        other = await _key(api, _unique("outro"), [])
        created = await api.post(
            f"{PUBLIC}/sends", json=_send(sender=sender["email"]), headers=_auth(mine, "x")
        )
        assert created.status_code == 201
        assert (
            await api.get(f"{PUBLIC}/sends/{created.json()['send_id']}", headers=_auth(other))
        ).status_code == 404

    async def test_routing_rules_pick_the_sender_by_tenant_and_message_type(
        self, api: httpx.AsyncClient
    ) -> None:
        avisos, requerimentos, tenant_avisos = await _sender(api), await _sender(api), await _sender(api)
        system = _unique("polo")
        key = await _key(api, system, [])
        for tenant, kind, sender in (
            ("", "aviso", avisos),
            ("", "requerimento", requerimentos),
            ("xy", "aviso", tenant_avisos),
        ):
            rule = await api.post(
                "/routing-rules",
                json={
                    "system": system,
                    "tenant": tenant,
                    "message_type": kind,
                    "sender_address_id": sender["sender_address_id"],
                },
            )
            assert rule.status_code == 201, rule.text
        duplicate = await api.post(
            "/routing-rules",
            json={
                "system": system,
                "message_type": "aviso",
                "sender_address_id": avisos["sender_address_id"],
            },
        )
        assert duplicate.status_code == 409

        async def routed(idempotency_key: str, **fields: Any) -> str:
            response = await api.post(
                f"{PUBLIC}/sends", json=_send(**fields), headers=_auth(key, idempotency_key)
            )
            assert response.status_code == 201, response.text
            return str(response.json()["sender"])

        assert await routed("r1", message_type="aviso") == avisos["email"]
        assert await routed("r2", message_type="requerimento") == requerimentos["email"]
        assert await routed("r3", message_type="aviso", tenant="xy") == tenant_avisos["email"]
        assert await routed("r4", message_type="requerimento", tenant="xy") == requerimentos["email"]

    async def test_stored_template_with_variables(self, api: httpx.AsyncClient, events: Any) -> None:
        sender = await _sender(api)
        key = await _key(api, _unique("polo"), [sender["sender_address_id"]])
        template_key = _unique("boas-vindas")
        stored = await api.post(
            "/templates",
            json={
                "key": template_key,
                "subject": "Bem-vindo ao {{ curso }}",
                "html": "<p>{{ nome }}: {{ curso }}</p>",
            },
        )
        assert stored.status_code == 201, stored.text
        bad = await api.post("/templates", json={"key": _unique("t"), "subject": "x", "html": "{% if %}"})
        assert bad.status_code == 422 and "line" in bad.text
        created = await api.post(
            f"{PUBLIC}/sends",
            json={
                "recipients": [{"email": "ana@example.org"}],
                "template": template_key,
                "variables": {"curso": "Física"},
                "sender": sender["email"],
            },
            headers=_auth(key, "t1"),
        )
        assert created.status_code == 201, created.text
        assert created.json()["template"] == template_key

    async def test_scheduled_send_waits_then_starts(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        from services.campaign import sends

        sender = await _sender(api)
        key = await _key(api, _unique("polo"), [sender["sender_address_id"]])
        later = utc_now() + timedelta(hours=1)
        created = await api.post(
            f"{PUBLIC}/sends",
            json=_send(sender=sender["email"], scheduled_at=later.isoformat()),
            headers=_auth(key, "s1"),
        )
        assert created.status_code == 201 and created.json()["status"] == "scheduled"
        await db.execute(
            "UPDATE campaign.api_sends SET scheduled_at = now() - interval '1 second' WHERE send_id = $1",
            uuid.UUID(created.json()["send_id"]),
        )
        await sends.start_due(api.app.state.runtime)  # type: ignore[attr-defined]
        shown = await api.get(f"{PUBLIC}/sends/{created.json()['send_id']}", headers=_auth(key))
        assert shown.json()["status"] == "queued"


class TestBadInput:
    @pytest.mark.parametrize(
        ("fields", "status", "code"),
        [
            ({"sender": "ninguem@nowhere.example"}, 422, "unknown_sender"),
            ({"message_type": "boleto"}, 422, "unknown_route"),
            ({"template": "no-such-template", "html": None, "subject": None}, 422, "unknown_template"),
            ({"html": "<p>{{ nome </p>"}, 422, "invalid_template"),
            ({"html": "<p>{{ curso }}</p>"}, 422, "invalid_template"),  # Ana has no 'curso'
            ({"html": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}, 422, "invalid_template"),
            ({"variables": {"nome": "x"}}, 422, "invalid"),
        ],
    )
    async def test_refused_with_a_reason_and_nothing_created(
        self, api: httpx.AsyncClient, db: asyncpg.Connection, fields: dict[str, Any], status: int, code: str
    ) -> None:
        sender = await _sender(api)
        system = _unique("polo")
        key = await _key(api, system, [sender["sender_address_id"]])
        body = {k: v for k, v in (_send(sender=sender["email"]) | fields).items() if v is not None}
        if "message_type" in fields:
            body.pop("sender")
        campaigns = await db.fetchval("SELECT count(*) FROM campaign.campaigns")
        response = await api.post(f"{PUBLIC}/sends", json=body, headers=_auth(key, "bad"))
        assert response.status_code == status, response.text
        assert response.json()["code"] == code and response.json()["detail"]
        assert await _count(db, system) == 0
        assert await db.fetchval("SELECT count(*) FROM campaign.campaigns") == campaigns

    async def test_a_sender_outside_the_keys_scope_is_403(self, api: httpx.AsyncClient) -> None:
        mine, theirs = await _sender(api), await _sender(api)
        key = await _key(api, _unique("polo"), [mine["sender_address_id"]])
        response = await api.post(
            f"{PUBLIC}/sends", json=_send(sender=theirs["email"]), headers=_auth(key, "k")
        )
        assert response.status_code == 403 and response.json()["code"] == "forbidden_sender"

    async def test_over_the_recipient_maximum_is_422(self, api: httpx.AsyncClient) -> None:
        sender = await _sender(api)
        key = await _key(api, _unique("polo"), [sender["sender_address_id"]])
        many = [{"email": f"p{i}@example.org"} for i in range(1001)]
        response = await api.post(
            f"{PUBLIC}/sends", json=_send(sender=sender["email"], recipients=many), headers=_auth(key, "k")
        )
        assert response.status_code == 422 and "1000" in response.text

    async def test_unknown_group_is_422_and_missing_idempotency_key_422(self, api: httpx.AsyncClient) -> None:
        sender = await _sender(api)
        key = await _key(api, _unique("polo"), [sender["sender_address_id"]])
        body = _send(sender=sender["email"], group_id=77)
        body.pop("recipients")
        body["html"] = "<p>{{ nome }}</p>"
        response = await api.post(f"{PUBLIC}/sends", json=body, headers=_auth(key, "g"))
        assert response.status_code == 422 and response.json()["code"] == "unknown_group"
        body["group_id"] = 1
        assert (await api.post(f"{PUBLIC}/sends", json=body, headers=_auth(key, "g"))).status_code == 201
        assert (await api.post(f"{PUBLIC}/sends", json=body, headers=_auth(key))).status_code == 422

    async def test_both_recipients_and_group_or_neither_is_422(self, api: httpx.AsyncClient) -> None:
        sender = await _sender(api)
        key = await _key(api, _unique("polo"), [sender["sender_address_id"]])
        both = await api.post(
            f"{PUBLIC}/sends", json=_send(sender=sender["email"], group_id=1), headers=_auth(key, "a")
        )
        assert both.status_code == 422 and "either" in both.text
