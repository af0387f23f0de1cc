"""Bounces end to end: a campaign's sends bounce (SES notifications injected through bounce's raw
SNS endpoint, as SNS raw message delivery posts them), the addresses are suppressed, the next
campaign to the same group skips them, and the reputation brake pauses the account once its
counted bounce rate crosses the threshold and resumes it only after the pause has ended and the
rates are back under. Five services as real processes, real PostgreSQL and RabbitMQ, and a local
SMTP sink.

Time is compressed through settings, not faked: the brake polls every half second, its counted
window is WINDOW_SECONDS instead of a day (so the bounces leave it within the test, as a day's
bounces leave the real window during a day's pause), and the account's pause lasts PAUSE_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from devtools.smtp_sink import ReceivedMessage, SmtpSink, free_port
from devtools.stack import SERVICES, Stack
from shared.contracts import topology
from shared.contracts.headers import CAMPAIGN_ID_HEADER, DELIVERY_ID_HEADER
from tests.support import until

pytestmark = pytest.mark.connected

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback-e2e"
# Feedback the service cannot trace to a delivery would be counted for this account; every
# notification here is traced through the message's provider id, to the account that sent it.
TOPIC_ACCOUNT = 999_999
RAW_SECRET = "raw-delivery-secret-e2e"
WINDOW_SECONDS = 45
PAUSE_SECONDS = 12
PEOPLE = 12
BOUNCED = 3  # 25 % of the sends: over the default 5 % threshold


@pytest.fixture
def stack(database_url: str, own_vhost: str, tmp_path: Path) -> Iterator[Stack]:
    """The five services, bounce taking raw SNS deliveries and braking on a compressed clock."""
    services = Stack(
        env={
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": own_vhost,
            "ENVIRONMENT": "test",
            "LOG_FORMAT": "text",
            "SNS_TOPIC_ACCOUNTS": json.dumps({TOPIC: TOPIC_ACCOUNT}),
            "SNS_RAW_DELIVERY_SECRET": RAW_SECRET,
            "REPUTATION_POLL_SECONDS": "0.5",
            "REPUTATION_WINDOW_HOURS": str(WINDOW_SECONDS / 3600),
            # Judged from the first send: with one, a resume means every counted send left the
            # window, so the next campaign's sends are judged on their own.
            "REPUTATION_MIN_SENDS": "1",
        },
        ports={name: free_port() for name in SERVICES},
        log_dir=tmp_path / "logs",
    )
    services.start_all()
    try:
        services.wait_ready(timeout=90)
        yield services
    finally:
        services.stop()
        for log in sorted((tmp_path / "logs").glob("*.log")):
            print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-6000:]}")


class Resolutions:
    """`campaign.recipients_resolved` events, kept in a queue of the test's own vhost."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._queue = f"test.resolutions.{uuid.uuid4().hex[:8]}"
        self._seen: list[dict[str, Any]] = []
        asyncio.run(self._declare())

    async def _declare(self) -> None:
        connection = await aio_pika.connect(self._url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                topology.EVENTS.name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(self._queue, durable=False)
            await queue.bind(exchange, "campaign.recipients_resolved")

    async def _drain(self) -> list[dict[str, Any]]:
        connection = await aio_pika.connect(self._url)
        bodies = []
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(self._queue)
            while (message := await queue.get(fail=False)) is not None:
                await message.ack()
                bodies.append(json.loads(message.body))
        return bodies

    def of(self, campaign_id: int) -> dict[str, Any] | None:
        """The resolution of the campaign, if it arrived (earlier ones are kept)."""
        self._seen += asyncio.run(self._drain())
        return next((r for r in self._seen if r["campaign_id"] == campaign_id), None)


def _bounce_notification(message: ReceivedMessage) -> dict[str, Any]:
    """SES's Bounce notification of a message, dated when it was sent (its Date header): SES's
    own come seconds to minutes later; dated so, the bounce leaves the brake's window with the
    send it answers rather than after it."""
    at = parsedate_to_datetime(str(message.message["Date"])).astimezone(UTC)
    stamp = at.isoformat().replace("+00:00", "Z")
    email = message.recipients[0]
    return {
        "notificationType": "Bounce",
        "mail": {
            "timestamp": stamp,
            "source": message.envelope_from,
            "messageId": str(message.message["Message-ID"]),
            "destination": [email],
            "headersTruncated": False,
            "headers": [
                {"name": name, "value": str(message.message[name])}
                for name in (CAMPAIGN_ID_HEADER, DELIVERY_ID_HEADER)
            ],
        },
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": email,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": stamp,
            "feedbackId": uuid.uuid4().hex,
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        },
    }


def test_bounces_suppress_the_addresses_and_brake_the_account_until_the_pause_ends_and_the_rate_is_under(
    stack: Stack, sink: SmtpSink, own_vhost: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    people = [{"email": f"pessoa{n}.{tag}@example.org", "name": f"Pessoa {n}"} for n in range(PEOPLE)]
    api = stack.campaign_api()
    bounce = httpx.Client(base_url=stack.url("bounce"), timeout=15)
    resolutions = Resolutions(own_vhost)
    account = api.post(
        "/accounts",
        json={
            "name": f"Sink {tag}",
            "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none"},
            "rate_per_second": 100,
            "pause_hours": PAUSE_SECONDS / 3600,
        },
    )
    assert account.status_code == 201, account.text
    account_id = account.json()["account_id"]
    sender = api.post(
        "/sender-addresses",
        json={"account_id": account_id, "name": "Itaú Social", "email": f"news.{tag}@mailer.example"},
    )
    assert sender.status_code == 201, sender.text
    group = api.post("/groups", json={"name": f"Lista {tag}", "members": people})
    assert group.status_code == 201, group.text

    def send_campaign(name: str) -> int:
        campaign = api.post(
            "/campaigns",
            json={
                "name": name,
                "sender_address_id": sender.json()["sender_address_id"],
                "group_ids": [group.json()["group_id"]],
                "subject": "Novidades, {{ nome }}",
                "html": "<html><body><p>Olá {{ nome }}.</p></body></html>",
            },
        )
        assert campaign.status_code == 201, campaign.text
        campaign_id: int = campaign.json()["campaign_id"]
        started = api.post(f"/campaigns/{campaign_id}/start")
        assert started.status_code == 202, started.text
        return campaign_id

    def campaign_of(campaign_id: int) -> dict[str, Any]:
        body: dict[str, Any] = api.get(f"/campaigns/{campaign_id}").json()
        return body

    def account_state() -> dict[str, Any]:
        body: dict[str, Any] = api.get(f"/accounts/{account_id}").json()
        return body

    def reputation() -> dict[str, Any]:
        response = bounce.get(f"/api/v1/accounts/{account_id}/reputation", params={"hours": 1})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    # Campaign 1 reaches everyone; bounce counted every send.
    first = send_campaign("Primeira")
    done = until(lambda: campaign_of(first)["status"] == "completed", timeout=60)
    assert done, campaign_of(first)
    assert campaign_of(first)["sent"] == PEOPLE
    messages = {m.recipients[0]: m for m in sink.received()}
    assert sorted(messages) == sorted(p["email"] for p in people)
    counted = until(lambda: [r for r in reputation()["history"] if r["sent"] == PEOPLE], timeout=30)
    assert counted, reputation()
    assert not reputation()["pause"] and not account_state()["paused"]

    # SES reports hard bounces for three of them (one is delivered twice: SNS retries).
    bounced = [p["email"] for p in people[:BOUNCED]]
    raw = {"x-amz-sns-topic-arn": TOPIC, "content-type": "text/plain; charset=UTF-8"}
    for email in bounced:
        body = json.dumps(_bounce_notification(messages[email]))
        headers = raw | {"x-amz-sns-message-id": str(uuid.uuid4())}
        for _ in range(2 if email == bounced[0] else 1):
            posted = bounce.post("/sns/raw", content=body, headers=headers, auth=("sns", RAW_SECRET))
            assert posted.status_code == 204, posted.text
    # A forged delivery (no secret) is refused and changes nothing.
    forged = bounce.post(
        "/sns/raw",
        content=json.dumps(_bounce_notification(messages[people[-1]["email"]])),
        headers=raw | {"x-amz-sns-message-id": str(uuid.uuid4())},
        auth=("sns", "wrong"),
    )
    assert forged.status_code == 403

    # The addresses are on the shared suppression list, with their campaign and account.
    def suppressions() -> dict[str, dict[str, Any]]:
        found = {}
        for email in [p["email"] for p in people]:
            items = bounce.get("/api/v1/suppressions", params={"email": email}).json()["items"]
            found.update({item["email"]: item for item in items})
        return found

    suppressed = until(lambda: (lambda s: s if len(s) == BOUNCED else None)(suppressions()), timeout=30)
    assert suppressed and sorted(suppressed) == sorted(bounced), suppressions()
    for entry in suppressed.values():
        assert (entry["reason"], entry["campaign_id"], entry["account_id"]) == ("bounce", first, account_id)
        assert "5.1.1" in entry["diagnostic"]

    # The campaign's results show the bounces.
    def bounces_shown() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/campaigns/{first}/results", params={"status": "bounced"}).json()
        return body if body["totals"]["bounces"] == BOUNCED else None

    shown = until(bounces_shown, timeout=30)
    assert shown, api.get(f"/campaigns/{first}/results").json()["totals"]
    assert sorted(r["email"] for r in shown["items"]) == sorted(bounced)
    assert all(r["bounce_kind"] == "permanent" for r in shown["items"])

    # The brake paused the account: 3 hard bounces in 12 sends is 25 % (already the first, at
    # 8 %, is over the default 5 %), and campaign shows the pause its senders obey.
    paused = until(lambda: (lambda a: a if a["paused"] else None)(account_state()), timeout=30)
    assert paused, account_state()
    assert "bounce rate" in paused["pause_reason"]
    pause = reputation()["pause"]
    assert pause and "bounce rate" in pause["reason"]
    paused_until = datetime.fromisoformat(pause["until"])
    assert paused_until == datetime.fromisoformat(paused["paused_until"])
    assert (
        abs((paused_until - datetime.fromisoformat(pause["paused_at"])).total_seconds() - PAUSE_SECONDS) < 1
    )

    # Campaign 2 to the same group, started during the pause: audience leaves the suppressed
    # addresses out, and nothing is sent while the account is paused.
    second = send_campaign("Segunda")
    resolution = until(lambda: resolutions.of(second), timeout=30)
    assert resolution, campaign_of(second)
    assert (resolution["included"], resolution["suppressed"]) == (PEOPLE - BOUNCED, BOUNCED)
    assert campaign_of(second)["recipients"] == PEOPLE - BOUNCED
    # Nothing is sent while bounce still holds the pause (its resume would leave only after it
    # dropped the pause, so a count taken before that is a count during the pause).
    during = len(sink.received())
    if reputation()["pause"] is not None:
        assert during == PEOPLE

    # The pause ends, but the bounces are still in the window: the account stays paused (each
    # poll judges it again) until they leave it.
    resumed = until(lambda: not account_state()["paused"], timeout=PAUSE_SECONDS + WINDOW_SECONDS + 30)
    resumed_at = datetime.now(UTC)
    assert resumed, (account_state(), reputation())
    assert resumed_at >= paused_until
    # Polls after the pause's end that kept it: the bounce rate was still over.
    kept = [
        r
        for r in reputation()["history"]
        if r["paused"] and datetime.fromisoformat(r["polled_at"]) >= paused_until
    ]
    assert kept, reputation()["history"]
    assert all(r["bounce_rate"] is not None and r["bounce_rate"] >= 0.05 for r in kept)
    assert reputation()["pause"] is None

    # Resumed, the account sends campaign 2 to everyone but the suppressed.
    done = until(lambda: campaign_of(second)["status"] == "completed", timeout=60)
    assert done, campaign_of(second)
    assert campaign_of(second)["sent"] == PEOPLE - BOUNCED
    counts = sink.count_by_recipient()
    assert {email: counts[email] for email in bounced} == dict.fromkeys(bounced, 1)
    assert {p["email"]: counts[p["email"]] for p in people[BOUNCED:]} == {
        p["email"]: 2 for p in people[BOUNCED:]
    }
    results = api.get(f"/campaigns/{second}/results", params={"limit": 100}).json()["items"]
    assert not {r["email"] for r in results} & set(bounced)
    # Clean sends do not brake the account again.
    judged = until(
        lambda: [r for r in reputation()["history"] if r["sent"] == PEOPLE - BOUNCED and not r["paused"]],
        timeout=30,
    )
    assert judged, reputation()
    assert not account_state()["paused"]
