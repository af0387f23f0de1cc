"""sender.rate: how exactly each account holds its rate when many send at once (target: every
account within 2 % of its rate).

20 accounts at 10 messages/s each, each with its own campaign of 700 recipients (more than the
window needs), published at once into one sender process (see `bench.sender_stack`). Each
account's rate is measured from the sink's arrival times over a 60 s window that starts one
second after its first arrival (the token bucket may start with a burst): the number of intervals
between the arrivals in the window over the time they span. Every account's rate goes to stderr.

The figure is a `<=` one: value = the worst account's deviation from its rate in %, baseline =
2.0 (the allowed deviation in %), threshold 1, so it is ok when the worst deviation is <= 2 %.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from bench.figures import Figure
from bench.sender_stack import SenderRig, recipients, sender_rig

log = logging.getLogger(__name__)

ACCOUNTS = 20
RATE = 10.0
WINDOW = 60.0
SKIPPED = 1.0  # seconds after an account's first arrival left out of its window
RECIPIENTS = 700
ALLOWED_DEVIATION = 2.0  # %
_FIRST_ARRIVALS_TIMEOUT = 30.0


def _campaign(account_id: int) -> int:
    return 1000 + account_id


def rate_in_window(times: list[float]) -> float:
    """Arrivals per second over [first + SKIPPED, first + SKIPPED + WINDOW]: intervals / span."""
    start = times[0] + SKIPPED
    inside = [t for t in times if start <= t <= start + WINDOW]
    if len(inside) < 2:
        return 0.0
    return (len(inside) - 1) / (inside[-1] - inside[0])


async def _measure(rig: SenderRig) -> dict[int, float]:
    accounts = range(1, ACCOUNTS + 1)
    await asyncio.gather(*(rig.configure_account(a, RATE, max_connections=3) for a in accounts))
    await asyncio.gather(*(rig.start_campaign(_campaign(a), a) for a in accounts))
    await asyncio.gather(*(rig.send(_campaign(a), a, recipients(_campaign(a), RECIPIENTS)) for a in accounts))
    published = time.time()
    first: dict[str, float] = {}
    while len(first) < ACCOUNTS:
        if time.time() - published > _FIRST_ARRIVALS_TIMEOUT:
            raise TimeoutError(
                f"only {len(first)} of {ACCOUNTS} accounts sent within {_FIRST_ARRIVALS_TIMEOUT:.0f} s"
            )
        for arrival in rig.arrivals():
            first.setdefault(str(arrival.campaign), arrival.at)
        await asyncio.sleep(0.5)
    # Every account's window is over once the last one to start has had its own.
    await asyncio.sleep(max(0.0, max(first.values()) + SKIPPED + WINDOW + 0.5 - time.time()))
    # Stop every account before the rig goes down: nothing is left sending during the shutdown.
    await asyncio.gather(*(rig.pause(a) for a in accounts))
    times: defaultdict[str, list[float]] = defaultdict(list)
    for arrival in rig.arrivals():
        times[str(arrival.campaign)].append(arrival.at)
    return {a: rate_in_window(sorted(times[str(_campaign(a))])) for a in accounts}


async def run() -> list[Figure]:
    async with sender_rig() as rig:
        rates = await _measure(rig)
    for account, rate in rates.items():
        log.info("account %2d: %.3f msg/s (%+.2f %%)", account, rate, (rate - RATE) / RATE * 100)
    worst = max(abs(rate - RATE) / RATE * 100 for rate in rates.values())
    return [
        Figure(
            bench="sender.rate",
            value=worst,
            unit="%",
            baseline=ALLOWED_DEVIATION,
            threshold=1,
            comparison="<=",
        )
    ]
