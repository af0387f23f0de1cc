"""A campaign into the local SMTP sink, set up through the campaign API the way the tests that
crash or stop services mid-campaign need it, and what it ended with."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from devtools.smtp_sink import SmtpSink
from tests.support import until


@dataclass(frozen=True)
class SinkCampaign:
    """A started campaign and the addresses it goes to."""

    campaign_id: int
    emails: frozenset[str]


def start_sink_campaign(
    api: httpx.Client, sink: SmtpSink, *, recipients: int, rate: float, tag: str
) -> SinkCampaign:
    """An SMTP account on `sink` at `rate` messages/s, a sender address, a group of `recipients`
    people and a campaign to them, started."""
    # Unique names and addresses: the run's database is shared by every end-to-end test, and
    # audience rightly leaves out addresses that other tests suppressed or unsubscribed.
    run = uuid.uuid4().hex[:8]
    account = api.post(
        "/accounts",
        json={
            "name": f"Sink {run}",
            "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none"},
            "rate_per_second": rate,
        },
    )
    assert account.status_code == 201, account.text
    sender = api.post(
        "/sender-addresses",
        json={"account_id": account.json()["account_id"], "name": "Mailer", "email": f"news-{run}@m.example"},
    )
    assert sender.status_code == 201, sender.text
    members = [{"email": f"{tag}{i}.{run}@example.com", "name": f"Pessoa {i}"} for i in range(recipients)]
    group = api.post("/groups", json={"name": "Todos", "members": members})
    assert group.status_code == 201, group.text
    campaign = api.post(
        "/campaigns",
        json={
            "name": tag,
            "sender_address_id": sender.json()["sender_address_id"],
            "group_ids": [group.json()["group_id"]],
            "subject": "Olá, {{ nome }}",
            "html": "<p>Olá {{ nome }}</p>",
        },
    )
    assert campaign.status_code == 201, campaign.text
    campaign_id: int = campaign.json()["campaign_id"]
    assert api.post(f"/campaigns/{campaign_id}/start").status_code == 202
    return SinkCampaign(campaign_id, frozenset(m["email"] for m in members))


def completed(api: httpx.Client, campaign_id: int, timeout: float = 120) -> dict[str, Any]:
    """The campaign once it completed (fails if it does not within `timeout` seconds)."""

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/campaigns/{campaign_id}").json()
        return body if body["status"] == "completed" else None

    final = until(finished, timeout=timeout)
    assert final, api.get(f"/campaigns/{campaign_id}").json()
    return final


def all_results(api: httpx.Client, campaign_id: int) -> list[dict[str, Any]]:
    """Every recipient's result, page after page."""
    results: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api.get(f"/campaigns/{campaign_id}/results", params={"after": after, "limit": 1000}).json()
        results += page["items"]
        if page["next_after"] is None:
            return results
        after = page["next_after"]
