"""SIGTERM to a sender in the middle of a batch (what Kubernetes does before SIGKILL): it finishes
or hands back its work within the grace period, and after a restart every recipient has exactly
one message and nothing is in doubt."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from devtools.smtp_sink import SmtpSink
from devtools.stack import Stack
from tests.e2e.sink_campaign import all_results, completed, start_sink_campaign
from tests.support import until

pytestmark = pytest.mark.connected

RECIPIENTS = 300
RATE = 30.0
# Kubernetes' default terminationGracePeriodSeconds.
GRACE = 30.0


def test_sigterm_mid_batch_loses_nothing_and_sends_nothing_twice(stack: Stack, sink: SmtpSink) -> None:
    api = stack.campaign_api()
    campaign = start_sink_campaign(api, sink, recipients=RECIPIENTS, rate=RATE, tag="term")

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

    final = completed(api, campaign.campaign_id)
    received: Counter[str] = sink.count_by_recipient()
    assert {e for e, n in received.items() if n > 1} == set()
    assert campaign.emails - set(received) == set()
    # A graceful stop leaves nothing in doubt.
    assert (final["sent"], final["indeterminate"], final["failed"]) == (RECIPIENTS, 0, 0), final
    assert {r["status"] for r in all_results(api, campaign.campaign_id)} == {"sent"}
    print(f"SIGTERM after {stopped_at} sent; stopped in {took:.1f} s; {RECIPIENTS} delivered once each")
