"""Another system sends through the platform: over HTTP with its API key (the sender chosen by a
routing rule) and over RabbitMQ (`send.requested` naming its sender, to a group), each answered
and followed through the whole pipeline; the mail arrives from the routed sender, a reader's
open shows in "Envios por API" and in the send's own status, and a test send reports the SMTP
conversation. Five services as real processes, real PostgreSQL and RabbitMQ, a local SMTP sink."""

from __future__ import annotations

import asyncio
import html
import json
import re
import uuid
from email.utils import parseaddr
from typing import Any

import aio_pika
import httpx
import pytest

from devtools.smtp_sink import ReceivedMessage, SmtpSink
from devtools.stack import Stack
from services.campaign.settings import DEV_CAMPAIGN_API_TOKEN
from shared.contracts import SendRecipient, SendRequested, topology
from tests.support import until

pytestmark = pytest.mark.connected

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def _pixel(message: ReceivedMessage) -> str:
    found = re.search(r'<img src="([^"]+/o/[^"]+)"', message.body("html"))
    assert found, message.body("html")
    return html.unescape(found.group(1))


async def _publish_and_wait(
    amqp_url: str, requests: list[SendRequested], answers: int
) -> list[dict[str, Any]]:
    """Publish send requests as another system would and collect the answers (accepted/rejected)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        for routing_key in ("send.accepted", "send.rejected"):
            await queue.bind(topology.EVENTS.name, routing_key=routing_key)
        exchange = await channel.get_exchange(topology.EVENTS.name)
        for request in requests:
            await exchange.publish(
                aio_pika.Message(
                    request.model_dump_json().encode(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=SendRequested.routing_key,
            )
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        received.append({"routing_key": message.routing_key, **json.loads(message.body)})
                    if len(received) == answers:
                        break
        return received
    finally:
        await connection.close()


def test_other_systems_send_over_http_and_rabbitmq(stack: Stack, sink: SmtpSink, own_vhost: str) -> None:
    tag = uuid.uuid4().hex[:8]
    system = f"polo-{tag}"
    admin = httpx.Client(
        base_url=f"{stack.url('campaign')}/api/v1",
        timeout=15,
        headers={"Authorization": f"Bearer {DEV_CAMPAIGN_API_TOKEN}"},
    )
    account = admin.post(
        "/accounts",
        json={
            "name": f"Sink {tag}",
            "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none"},
        },
    )
    assert account.status_code == 201, account.text
    senders = {}
    for kind, name in (("avisos", "Polo Avisos"), ("atendimento", "Polo Atendimento")):
        created = admin.post(
            "/sender-addresses",
            json={
                "account_id": account.json()["account_id"],
                "name": name,
                "email": f"{kind}.{tag}@polo.example",
            },
        )
        assert created.status_code == 201, created.text
        senders[kind] = created.json()
    # The portal may name "avisos" directly; its requests ("requerimento") leave from "atendimento".
    key = admin.post(
        "/api-keys",
        json={
            "system": system,
            "name": "Portal",
            "sender_address_ids": [senders["avisos"]["sender_address_id"]],
        },
    )
    assert key.status_code == 201, key.text
    rule = admin.post(
        "/routing-rules",
        json={
            "system": system,
            "message_type": "requerimento",
            "sender_address_id": senders["atendimento"]["sender_address_id"],
        },
    )
    assert rule.status_code == 201, rule.text
    public = httpx.Client(
        base_url=f"{stack.url('campaign')}/public/v1",
        timeout=60,
        headers={"Authorization": f"Bearer {key.json()['token']}"},
    )

    # Over HTTP, routed by message type.
    http_people = [f"ana.{tag}@example.org", f"bruno.{tag}@example.org"]
    http_send = public.post(
        "/sends",
        headers={"Idempotency-Key": f"req-{tag}"},
        json={
            "recipients": [
                {"email": http_people[0], "name": "Ana"},
                {"email": http_people[1], "name": "Bruno"},
            ],
            "subject": "Requerimento {{ protocolo }} atualizado",
            "html": "<html><body><p>Olá {{ nome }}, o requerimento {{ protocolo }} mudou.</p></body></html>",
            "variables": {"protocolo": "2026/123"},
            "message_type": "requerimento",
        },
    )
    assert http_send.status_code == 201, http_send.text
    assert http_send.json()["sender"] == senders["atendimento"]["email"]

    # Over RabbitMQ, to a group, naming its sender; and one request with no route, refused.
    amqp_people = [f"carla.{tag}@example.org", f"davi.{tag}@example.org"]
    group = admin.post(
        "/groups",
        json={
            "name": f"Turma {tag}",
            "members": [
                {"email": amqp_people[0], "name": "Carla"},
                {"email": amqp_people[1], "name": "Davi"},
            ],
        },
    )
    assert group.status_code == 201, group.text
    requests = [
        SendRequested(
            system=system,
            idempotency_key=f"aviso-{tag}",
            group_id=group.json()["group_id"],
            subject="Aviso: {{ assunto }}",
            html="<html><body><p>{{ nome }}, {{ assunto }}.</p></body></html>",
            variables={"assunto": "aulas suspensas"},
            sender=senders["avisos"]["email"],
            priority=7,
        ),
        SendRequested(
            system=system,
            idempotency_key=f"boleto-{tag}",
            recipients=[SendRecipient(email=f"eva.{tag}@example.org")],
            subject="Boleto",
            html="<p>x</p>",
            message_type="boleto",
        ),
    ]
    answers = asyncio.run(_publish_and_wait(own_vhost, requests, answers=2))
    by_key = {a["idempotency_key"]: a for a in answers}
    accepted, rejected = by_key[f"aviso-{tag}"], by_key[f"boleto-{tag}"]
    assert accepted["routing_key"] == "send.accepted" and accepted["sender"] == senders["avisos"]["email"]
    assert rejected["routing_key"] == "send.rejected" and rejected["code"] == "unknown_route"
    assert "boleto" in rejected["reason"]

    # Both are delivered from their senders.
    def delivered() -> dict[str, ReceivedMessage] | None:
        got = {m.recipients[0]: m for m in sink.received() if m.recipients[0] in http_people + amqp_people}
        return got if len(got) == 4 else None

    received = until(delivered, timeout=60)
    assert received, [m.recipients for m in sink.received()]
    for person in http_people:
        assert parseaddr(str(received[person].message["From"]))[1] == senders["atendimento"]["email"]
        assert str(received[person].message["Subject"]) == "Requerimento 2026/123 atualizado"
    for person in amqp_people:
        assert parseaddr(str(received[person].message["From"]))[1] == senders["avisos"]["email"]
        assert "aulas suspensas" in received[person].body("html")

    # Ana reads hers: the open counts on the send and in "Envios por API".
    assert (
        httpx.get(_pixel(received[http_people[0]]), headers={"user-agent": BROWSER}, timeout=10).status_code
        == 200
    )
    send_id = http_send.json()["send_id"]

    def opened() -> dict[str, Any] | None:
        body: dict[str, Any] = public.get(f"/sends/{send_id}").json()
        return body if body["status"] == "completed" and body["totals"]["read"] == 1 else None

    shown = until(opened, timeout=45)
    assert shown, public.get(f"/sends/{send_id}").json()
    assert shown["totals"]["sent"] == 2 and shown["totals"]["opens"] == 1

    listing = {s["idempotency_key"]: s for s in admin.get("/api-sends", params={"system": system}).json()}
    assert set(listing) == {f"req-{tag}", f"aviso-{tag}"}
    assert listing[f"req-{tag}"]["channel"] == "http" and listing[f"aviso-{tag}"]["channel"] == "amqp"
    assert listing[f"req-{tag}"]["sender_email"] == senders["atendimento"]["email"]
    assert listing[f"req-{tag}"]["opens"] == 1 and listing[f"req-{tag}"]["read"] == 1
    results = public.get(f"/sends/{send_id}/results").json()
    assert sorted(r["email"] for r in results["items"]) == sorted(http_people)
    assert [r["email"] for r in results["items"] if r["opened_at"]] == [http_people[0]]

    # The same request again is the same send; the key with another body is a conflict.
    again = public.post(
        "/sends", headers={"Idempotency-Key": f"req-{tag}"}, json=json.loads(http_send.request.content)
    )
    assert (again.status_code, again.json()["send_id"]) == (200, send_id)

    # "Testar envio" from the API: the SMTP conversation comes back, the message reaches the sink.
    tested = public.post(
        f"/senders/{senders['avisos']['sender_address_id']}/test", json={"to": f"teste.{tag}@example.org"}
    )
    assert tested.status_code == 200, tested.text
    outcome = tested.json()
    assert outcome["ok"] is True and outcome["sender"] == senders["avisos"]["email"]
    assert any(step.startswith("DATA: 250") for step in outcome["transcript"]), outcome["transcript"]
    assert until(
        lambda: any(m.recipients[0] == f"teste.{tag}@example.org" for m in sink.received()), timeout=10
    )

    # And of the account itself, from any address (an account before it has senders).
    account_test = admin.post(
        f"/accounts/{account.json()['account_id']}/test",
        json={"to": f"conta.{tag}@example.org", "from_address": f"qualquer.{tag}@polo.example"},
    )
    assert account_test.status_code == 200, account_test.text
    assert account_test.json()["ok"] is True and account_test.json()["account"] == f"Sink {tag}"
    assert until(
        lambda: any(m.recipients[0] == f"conta.{tag}@example.org" for m in sink.received()), timeout=10
    )
