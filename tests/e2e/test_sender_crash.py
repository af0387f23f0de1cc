"""A sender killed (SIGKILL) several times during a real campaign: every recipient gets exactly
one message, except those reported indeterminate, and none is lost.

Five services as real processes, real PostgreSQL and RabbitMQ, and a local SMTP sink that counts
what each recipient received.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest

from devtools.smtp_sink import SmtpSink
from devtools.stack import Stack
from tests.support import until

pytestmark = pytest.mark.connected

RECIPIENTS = 400
RATE = 40.0
KILLS = 3


def _all_results(api: httpx.Client, campaign_id: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api.get(f"/campaigns/{campaign_id}/results", params={"after": after, "limit": 1000}).json()
        results += page["items"]
        if page["next_after"] is None:
            return results
        after = page["next_after"]


def _ledger_of(database_url: str, emails: set[str]) -> list[dict[str, Any]]:
    """What sender and campaign stored for these addresses (to explain a failure)."""

    async def read() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT d.*, r.status AS result FROM sender.deliveries d LEFT JOIN campaign.results r"
                " USING (campaign_id, recipient_id) WHERE d.email = ANY($1)",
                list(emails),
            )
            return [dict(r) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(read())


def test_killing_the_sender_mid_campaign_neither_loses_nor_duplicates(
    stack: Stack, sink: SmtpSink, database_url: str
) -> None:
    api = stack.campaign_api()
    account = api.post(
        "/accounts",
        json={
            # Unique: the run's database is shared by every end-to-end test.
            "name": f"Sink {uuid.uuid4().hex[:8]}",
            "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none"},
            "rate_per_second": RATE,
        },
    )
    assert account.status_code == 201, account.text
    sender = api.post(
        "/sender-addresses",
        json={
            "account_id": account.json()["account_id"],
            "name": "Mailer",
            "email": f"news-{uuid.uuid4().hex[:8]}@mailer.example",
        },
    ).json()
    # Addresses of this test alone: other tests of the run suppress or unsubscribe addresses in
    # the database this stack shares, and audience would rightly leave those out.
    run = uuid.uuid4().hex[:8]
    members = [{"email": f"crash{i}.{run}@example.com", "name": f"Pessoa {i}"} for i in range(RECIPIENTS)]
    group = api.post("/groups", json={"name": "Todos", "members": members}).json()
    campaign = api.post(
        "/campaigns",
        json={
            "name": "Resistente",
            "sender_address_id": sender["sender_address_id"],
            "group_ids": [group["group_id"]],
            "subject": "Olá, {{ nome }}",
            "html": "<p>Olá {{ nome }}</p>",
        },
    ).json()
    campaign_id = campaign["campaign_id"]
    assert api.post(f"/campaigns/{campaign_id}/start").status_code == 202

    for kill in range(KILLS):
        # Let it send a while, then crash it mid-batch and bring it back.
        floor = (kill + 1) * RECIPIENTS // (KILLS + 2)
        assert until(lambda floor=floor: len(sink.received()) >= floor, timeout=60), len(sink.received())
        stack.kill("sender")
        stack.start("sender")
        stack.wait_ready(timeout=60)

    def completed() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/campaigns/{campaign_id}").json()
        return body if body["status"] == "completed" else None

    final = until(completed, timeout=120)
    assert final, api.get(f"/campaigns/{campaign_id}").json()

    received: Counter[str] = sink.count_by_recipient()
    results = {r["email"]: r for r in _all_results(api, campaign_id)}
    expected = {m["email"] for m in members}
    missing = expected - set(results)
    assert not missing, f"no outcome for {missing}: {_ledger_of(database_url, missing)} {final}"
    duplicated = {email: n for email, n in received.items() if n > 1}
    assert duplicated == {}
    indeterminate = {email for email, r in results.items() if r["status"] == "indeterminate"}
    never = expected - set(received)
    # Not received: only those reported indeterminate (the crash hit their SMTP transaction).
    assert never <= indeterminate, never - indeterminate
    assert {email for email, r in results.items() if r["status"] == "sent"} <= set(received)
    # At most the sends in flight per crash are in doubt.
    assert len(indeterminate) <= KILLS * 3, indeterminate
    assert (final["sent"], final["indeterminate"], final["failed"], final["skipped"]) == (
        RECIPIENTS - len(indeterminate),
        len(indeterminate),
        0,
        0,
    )
    print(
        f"recipients {RECIPIENTS}, delivered once {sum(1 for n in received.values() if n == 1)}, "
        f"twice {len(duplicated)}, never {len(never)}, indeterminate {len(indeterminate)}"
    )
