"""sender.pause and sender.after_pause: how fast pausing an account stops its sending, and that
nothing is sent once it has stopped (targets: p99 <= 1 s, and 0 messages).

One account at 50 messages/s (3 connections) sends a 4,000-recipient campaign from one sender
process (see `bench.sender_stack`). Twenty times: once messages flow (at least 25 since the last
resume, and 1.5 s after it), `account.paused` is published on the events exchange; 1.5 s later
`account.resumed`. A pause's latency is the last arrival at the sink after the pause was
published (and before the next resume) minus the time it was published, 0 if none came.
`sender.pause` is the p99 (nearest rank) of the 20 latencies against a baseline of 1.0 s,
`<=` 1. `sender.after_pause` counts the messages that arrived more than 1 s after a pause was
published and before the next resume, against a baseline of 1, `<=` 0.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from bench.figures import Figure
from bench.sender_stack import SenderRig, recipients, sender_rig, until

log = logging.getLogger(__name__)

ACCOUNT, CAMPAIGN = 1, 1
RATE = 50.0
RECIPIENTS = 4000
CYCLES = 20
FLOWING = 25  # arrivals after a resume before the next pause
SENDING = 1.5  # seconds from a resume to the next pause, at least
PAUSED = 1.5  # seconds from a pause to the next resume
LATENCY_TARGET = 1.0
_FLOW_TIMEOUT = 30.0


async def _cycles(rig: SenderRig) -> list[tuple[float, float]]:
    """(pause published, next resume published) of each cycle."""
    await rig.configure_account(ACCOUNT, RATE, max_connections=3)
    await rig.start_campaign(CAMPAIGN, ACCOUNT)
    await rig.send(CAMPAIGN, ACCOUNT, recipients(CAMPAIGN, RECIPIENTS))
    cycles: list[tuple[float, float]] = []
    resumed = time.time()
    for _ in range(CYCLES):
        floor = rig.sink.count() + FLOWING

        async def flowing(floor: int = floor) -> bool:
            return rig.sink.count() >= floor

        await until(flowing, "messages flowing", _FLOW_TIMEOUT)
        await asyncio.sleep(max(0.0, resumed + SENDING - time.time()))
        paused = await rig.pause(ACCOUNT)
        await asyncio.sleep(PAUSED)
        resumed = await rig.resume(ACCOUNT)
        cycles.append((paused, resumed))
    await rig.pause(ACCOUNT)
    return cycles


def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


async def run() -> list[Figure]:
    async with sender_rig() as rig:
        cycles = await _cycles(rig)
        arrivals = [a.at for a in rig.arrivals()]
    latencies: list[float] = []
    late = 0
    for paused, resumed in cycles:
        after = [t - paused for t in arrivals if paused < t < resumed]
        latencies.append(max(after, default=0.0))
        late += sum(1 for lag in after if lag > 1.0)
    log.info("pause latencies (s): %s", " ".join(f"{lag:.3f}" for lag in latencies))
    log.info("messages sent by the account: %d; after a pause had taken effect: %d", len(arrivals), late)
    return [
        Figure(
            bench="sender.pause",
            value=p99(latencies),
            unit="s",
            baseline=LATENCY_TARGET,
            threshold=1,
            comparison="<=",
        ),
        Figure(
            bench="sender.after_pause", value=late, unit="messages", baseline=1, threshold=0, comparison="<="
        ),
    ]
