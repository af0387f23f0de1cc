"""sender.throughput: messages/s of one sender process with the rate limit lifted, against what a
bare aiosmtplib pool reaches with prebuilt messages into the same sink (target: ratio >= 0.5).

The sender (a real process, see `bench.sender_stack`) serves one account with the rate lifted
(100,000/s) and 10 connections. A warm-up campaign of 200 recipients opens the connections and
compiles a campaign first. Then a campaign of 5,000 recipients is published in batches of 100 and
timed from the first batch published until the ledger records all 5,000 sent (the moment the sink
counted them all is logged too). The baseline sends 5,000 prebuilt messages of the mean size the
sink saw from the sender over 10 aiosmtplib connections (opened before the clock starts) into the
same sink process, after the sender's outbox has drained.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time

import aiosmtplib

from bench.figures import Figure
from bench.sender_stack import SenderRig, cpu_per_message, recipients, sender_rig, until

log = logging.getLogger(__name__)

MESSAGES = 5000
WARM_UP = 200
CONNECTIONS = 10
UNLIMITED_RATE = 100_000.0
TARGET_RATIO = 0.5
ACCOUNT, WARM_UP_CAMPAIGN, CAMPAIGN = 1, 1, 2
_TIMEOUT = 100.0


async def _sender_rate(rig: SenderRig) -> tuple[float, int]:
    """Messages/s of the sender over the timed campaign, and the mean size of its messages."""
    await rig.configure_account(ACCOUNT, UNLIMITED_RATE, CONNECTIONS)
    for campaign in (WARM_UP_CAMPAIGN, CAMPAIGN):
        await rig.start_campaign(campaign, ACCOUNT)
    await rig.send(WARM_UP_CAMPAIGN, ACCOUNT, recipients(WARM_UP_CAMPAIGN, WARM_UP))
    await until(lambda: _sent_all(rig, WARM_UP_CAMPAIGN, WARM_UP), "warm-up sent", _TIMEOUT)
    await rig.settled()

    cpu_before = await rig.cpu_seconds()
    started = time.time()
    await rig.send(CAMPAIGN, ACCOUNT, recipients(CAMPAIGN, MESSAGES))
    finished = await until(lambda: _sent_all(rig, CAMPAIGN, MESSAGES), "campaign sent", _TIMEOUT)
    # Wall time per message against the CPU each party spent on it: a sender far from 1 CPU
    # second per wall second waits on something (the database, the broker) rather than computes.
    log.info(
        "CPU ms per message (wall %.2f ms): %s",
        (finished - started) / MESSAGES * 1000,
        cpu_per_message(cpu_before, await rig.cpu_seconds(), MESSAGES),
    )
    arrivals = [a for a in rig.arrivals() if a.campaign == str(CAMPAIGN)]
    if len(arrivals) != MESSAGES:
        raise RuntimeError(f"the sink received {len(arrivals)} messages of the campaign, expected {MESSAGES}")
    log.info(
        "sender: %d messages in %.2f s (sink had them all after %.2f s)",
        MESSAGES,
        finished - started,
        arrivals[-1].at - started,
    )
    return MESSAGES / (finished - started), round(statistics.mean(a.size for a in arrivals))


async def _sent_all(rig: SenderRig, campaign_id: int, expected: int) -> bool:
    return await rig.sent(campaign_id) >= expected


def _prebuilt(size: int) -> bytes:
    """A plain message of `size` bytes, lines of 78 characters as in a quoted-printable body."""
    head = (
        b"From: Mailer <news@mailer.example.com>\r\nTo: <r@baseline.example.com>\r\n"
        b"Subject: Novidades\r\nX-Mailer-Campaign: baseline\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    line = b"x" * 76 + b"\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    return head + body + b"x" * max(0, size - len(head) - len(body) - 2) + b"\r\n"


async def _pool_rate(port: int, message: bytes) -> float:
    """Messages/s of CONNECTIONS aiosmtplib connections sending `message` MESSAGES times."""
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port) for _ in range(CONNECTIONS)]
    await asyncio.gather(*(client.connect() for client in clients))
    # One shared iterator: each connection takes the next message when it is free, like a pool.
    pending = iter(range(MESSAGES))

    async def work(client: aiosmtplib.SMTP) -> None:
        for number in pending:
            await client.sendmail("news@mailer.example.com", [f"b{number}@baseline.example.com"], message)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(work(client) for client in clients))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(client.quit() for client in clients), return_exceptions=True)
    return MESSAGES / elapsed


async def run() -> list[Figure]:
    async with sender_rig() as rig:
        sender, size = await _sender_rate(rig)
        await rig.settled()
        baseline = await _pool_rate(rig.sink.port, _prebuilt(size))
        received = sum(1 for a in rig.arrivals() if a.campaign == "baseline")
        if received != MESSAGES:
            raise RuntimeError(f"the sink received {received} baseline messages, expected {MESSAGES}")
    log.info(
        "sender %.0f msg/s, bare aiosmtplib pool %.0f msg/s (messages of %d bytes)", sender, baseline, size
    )
    return [
        Figure(
            bench="sender.throughput", value=sender, unit="msg/s", baseline=baseline, threshold=TARGET_RATIO
        )
    ]
