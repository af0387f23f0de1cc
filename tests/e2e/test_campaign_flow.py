"""A campaign sent end to end: five services as real processes, real PostgreSQL and RabbitMQ,
and a local SMTP sink, driven only through the campaign HTTP API."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from devtools.smtp_sink import SmtpSink
from devtools.stack import Stack
from shared.contracts import headers
from tests.support import until

pytestmark = pytest.mark.connected

RECIPIENTS = [
    {"email": "ana.souza@example.com", "name": "Ana Souza"},
    {"email": "bruno@example.net", "name": "Bruno Lima"},
    {"email": "carla@example.org", "name": "Carla Dias"},
    # The same address again, in other letters: one message only.
    {"email": "ANA.SOUZA@EXAMPLE.COM", "name": "Ana de novo"},
]


BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Thunderbird/128.0"


def test_a_started_campaign_reaches_every_recipient_once_personalised(stack: Stack, sink: SmtpSink) -> None:
    api = stack.campaign_api()
    account = api.post(
        "/accounts",
        json={
            "name": "Sink",
            "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none"},
        },
    )
    assert account.status_code == 201, account.text
    sender = api.post(
        "/sender-addresses",
        json={
            "account_id": account.json()["account_id"],
            "name": "Itaú Social",
            "email": "news@mailer.example",
        },
    )
    assert sender.status_code == 201, sender.text
    group = api.post("/groups", json={"name": "Equipe", "members": RECIPIENTS})
    assert group.status_code == 201, group.text
    assert group.json()["members"] == 3
    campaign = api.post(
        "/campaigns",
        json={
            "name": "Boas-vindas",
            "sender_address_id": sender.json()["sender_address_id"],
            "group_ids": [group.json()["group_id"]],
            "subject": "Olá, {{ nome }}",
            "html": "<html><body><p>Caro(a) <b>{{ nome }}</b>, seu e-mail é {{ email }}.</p></body></html>",
        },
    )
    assert campaign.status_code == 201, campaign.text
    campaign_id = campaign.json()["campaign_id"]

    started = api.post(f"/campaigns/{campaign_id}/start")
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "queued"

    def completed() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/campaigns/{campaign_id}").json()
        return body if body["status"] == "completed" else None

    final = until(completed, timeout=60)
    assert final, api.get(f"/campaigns/{campaign_id}").json()
    assert (final["recipients"], final["sent"], final["failed"], final["skipped"], final["remaining"]) == (
        3,
        3,
        0,
        0,
        0,
    )
    assert final["started_at"] <= final["finished_at"]

    received = sink.received()
    assert sorted(sink.count_by_recipient().items()) == [
        ("ana.souza@example.com", 1),
        ("bruno@example.net", 1),
        ("carla@example.org", 1),
    ]
    for message in received:
        name = next(r["name"] for r in RECIPIENTS if r["email"] == message.recipients[0])
        assert message.message["Subject"] == f"Olá, {name}"
        assert f"<b>{name}</b>" in message.body("html")
        assert name in message.body("plain")
        assert message.message["From"] == "Itaú Social <news@mailer.example>"
        assert message.message[headers.CAMPAIGN_ID_HEADER] == str(campaign_id)

    results = api.get(f"/campaigns/{campaign_id}/results").json()["items"]
    assert [(r["email"], r["status"]) for r in results] == [
        ("ana.souza@example.com", "sent"),
        ("bruno@example.net", "sent"),
        ("carla@example.org", "sent"),
    ]
    assert all(r["sent_at"] for r in results)

    # Opening the message (its pixel) gives the recipient a read date.
    bruno = next(m for m in received if m.recipients == ("bruno@example.net",))
    pixel_url = re.search(r'<img src="([^"]+/o/[^"]+)"', bruno.body("html"))
    assert pixel_url
    # As a mail client loads it (tracking counts a bare HTTP library apart, as a machine).
    pixel = httpx.get(pixel_url.group(1), headers={"user-agent": BROWSER})
    assert (pixel.status_code, pixel.headers["content-type"]) == (200, "image/gif")

    def opened() -> list[Any]:
        rows = api.get(f"/campaigns/{campaign_id}/results").json()["items"]
        return [r["email"] for r in rows if r["opened_at"]]

    assert until(opened, timeout=20) == ["bruno@example.net"]

    # A finished campaign cannot be started again.
    assert api.post(f"/campaigns/{campaign_id}/start").status_code == 409
