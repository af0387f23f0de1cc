"""A sender killed (SIGKILL) several times during a real campaign: every recipient gets exactly
one message, except those reported indeterminate, and none is lost.

Five services as real processes, real PostgreSQL and RabbitMQ, and a local SMTP sink that counts
what each recipient received.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import pytest

from devtools.smtp_sink import SmtpSink
from devtools.stack import Stack
from tests.e2e.sink_campaign import all_results, completed, start_sink_campaign
from tests.support import until

pytestmark = pytest.mark.connected

RECIPIENTS = 400
RATE = 40.0
KILLS = 3


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
    campaign = start_sink_campaign(api, sink, recipients=RECIPIENTS, rate=RATE, tag="crash")

    for kill in range(KILLS):
        # Let it send a while, then crash it mid-batch and bring it back.
        floor = (kill + 1) * RECIPIENTS // (KILLS + 2)
        assert until(lambda floor=floor: len(sink.received()) >= floor, timeout=60), len(sink.received())
        stack.kill("sender")
        stack.start("sender")
        stack.wait_ready(timeout=60)

    final = completed(api, campaign.campaign_id)

    received: Counter[str] = sink.count_by_recipient()
    results = {r["email"]: r for r in all_results(api, campaign.campaign_id)}
    expected = campaign.emails
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
