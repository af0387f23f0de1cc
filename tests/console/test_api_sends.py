"""Envios por API in the console: the sends with sender and views (a normal user sees only those
of senders linked to them), API keys created (token shown once) and revoked, routing rules, and
each sender's SES status with a test send; administration for administrators only, audited."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.console.conftest import ADMIN_EMAIL, sign_in

pytestmark = pytest.mark.connected


async def _sender(service_api: httpx.AsyncClient) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    account = await service_api.post(
        "/accounts",
        json={"name": f"c-{tag}", "transport": "smtp", "smtp": {"host": "smtp.example", "port": 587}},
    )
    sender = await service_api.post(
        "/sender-addresses",
        json={
            "account_id": account.json()["account_id"],
            "name": "Polo Avisos",
            "email": f"avisos-{tag}@polo.example",
        },
    )
    assert sender.status_code == 201, sender.text
    return dict(sender.json())


async def test_admin_manages_keys_and_rules_and_sees_the_sends(
    browser: Callable[[], httpx.AsyncClient], service_api: httpx.AsyncClient
) -> None:
    admin = browser()
    csrf = await sign_in(admin, ADMIN_EMAIL, "Chefe")
    sender = await _sender(service_api)
    system = f"polo-{uuid.uuid4().hex[:8]}"

    created = await admin.post(
        "/console/envios-api/chaves",
        data={
            "csrf_token": csrf,
            "system": system,
            "name": "Portal do aluno",
            "rate_per_minute": "120",
            "senders[]": str(sender["sender_address_id"]),
        },
    )
    assert created.status_code == 200, created.text
    token = re.search(r'<code class="token">(mlr_[^<]+)</code>', created.text)
    assert token, created.text
    again = await admin.get("/console/envios-api/chaves")
    assert token.group(1) not in again.text and system in again.text

    rule = await admin.post(
        "/console/envios-api/regras",
        data={
            "csrf_token": csrf,
            "system": system,
            "message_type": "aviso",
            "sender_address_id": str(sender["sender_address_id"]),
        },
        follow_redirects=False,
    )
    assert rule.status_code == 303

    public = httpx.AsyncClient(
        transport=service_api._transport,
        base_url="http://test/public/v1",
        headers={"Authorization": f"Bearer {token.group(1)}", "Idempotency-Key": "console-1"},
    )
    send = await public.post(
        "/sends",
        json={
            "recipients": [{"email": "ana@example.org"}],
            "subject": "Oi",
            "html": "<p>Oi</p>",
            "message_type": "aviso",
        },
    )
    assert send.status_code == 201, send.text

    listing = await admin.get("/console/envios-api", params={"sistema": system})
    assert listing.status_code == 200
    assert sender["email"] in listing.text and "Na fila" in listing.text and "HTTP" in listing.text

    senders = await admin.get("/console/envios-api/remetentes")
    assert senders.status_code == 200 and "SMTP (não se aplica)" in senders.text

    key_id = re.search(rf'<td class="num">(\d+)</td>\s*<td>{system}</td>', again.text)
    assert key_id
    revoked = await admin.post(
        f"/console/envios-api/chaves/{key_id.group(1)}/revogar",
        data={"csrf_token": csrf},
        follow_redirects=False,
    )
    assert revoked.status_code == 303
    assert (await public.get("/sends")).status_code == 401


async def test_a_normal_user_sees_only_their_senders_sends_and_no_administration(
    browser: Callable[[], httpx.AsyncClient], service_api: httpx.AsyncClient
) -> None:
    person = browser()
    await sign_in(person, f"pessoa-{uuid.uuid4().hex[:8]}@console.test", "Pessoa")
    page = await person.get("/console/envios-api")
    assert page.status_code == 200 and "Chaves de API" not in page.text
    assert (await person.get("/console/envios-api/chaves")).status_code == 403
    assert (await person.get("/console/envios-api/remetentes")).status_code == 403
