"""SIGTERM to a sender in the middle of a batch (what Kubernetes does before SIGKILL): it finishes
or hands back its work within the grace period, and after a restart every recipient has exactly
one message and nothing is in doubt."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from devtools.smtp_sink import SmtpSink
from devtools.stack import Stack
from tests.support import until

pytestmark = pytest.mark.connected

RECIPIENTS = 300
RATE = 30.0
# Kubernetes' default terminationGracePeriodSeconds.
GRACE = 30.0


def _results(api: httpx.Client, campaign_id: int) -> list[dict[str, Any]]:
    page = api.get(f"/campaigns/{campaign_id}/results", params={"after": 0, "limit": 1000}).json()
    items: list[dict[str, Any]] = page["items"]
    return items


def test_sigterm_mid_batch_loses_nothing_and_sends_nothing_twice(stack: Stack, sink: SmtpSink) -> None:
    api = stack.campaign_api()
    account = api.post(
        "/accounts",
        json={
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
            "email": f"n-{uuid.uuid4().hex[:8]}@m.example",
        },
    ).json()
    run = uuid.uuid4().hex[:8]
    members = [{"email": f"term{i}.{run}@example.com", "name": f"Pessoa {i}"} for i in range(RECIPIENTS)]
    group = api.post("/groups", json={"name": "Todos", "members": members}).json()
    campaign_id = api.post(
        "/campaigns",
        json={
            "name": "Parada",
            "sender_address_id": sender["sender_address_id"],
            "group_ids": [group["group_id"]],
            "subject": "Olá, {{ nome }}",
            "html": "<p>Olá {{ nome }}</p>",
        },
    ).json()["campaign_id"]
    assert api.post(f"/campaigns/{campaign_id}/start").status_code == 202

    # Mid-batch: batches are 100 recipients and some of the first have gone.
    assert until(lambda: len(sink.received()) >= RECIPIENTS // 4, timeout=60), len(sink.received())
    process = stack.processes["sender"]
    asked = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=GRACE + 5)
    took = time.monotonic() - asked
    assert took < GRACE, f"sender took {took:.1f} s to stop"
    assert process.returncode is not None
    stopped_at = len(sink.received())
    stack.start("sender")
    stack.wait_ready(timeout=60)

    def completed() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/campaigns/{campaign_id}").json()
        return body if body["status"] == "completed" else None

    final = until(completed, timeout=120)
    assert final, api.get(f"/campaigns/{campaign_id}").json()
    received: Counter[str] = sink.count_by_recipient()
    expected = {m["email"] for m in members}
    assert {e for e, n in received.items() if n > 1} == set()
    assert expected - set(received) == set()
    # A graceful stop leaves nothing in doubt.
    assert (final["sent"], final["indeterminate"], final["failed"]) == (RECIPIENTS, 0, 0), final
    assert {r["status"] for r in _results(api, campaign_id)} == {"sent"}
    print(f"SIGTERM after {stopped_at} sent; stopped in {took:.1f} s; {RECIPIENTS} delivered once each")
