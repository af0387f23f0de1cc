"""What the sender benchmarks share: a sender as a real process (uvicorn, as deployed) in a
throwaway environment, sending into a counting SMTP sink process, and fed by the benchmark the way
the other services feed it: contract events and `SendBatch` commands published to RabbitMQ.

Nothing of the campaign or audience services runs: the benchmark publishes what they would
(`AccountConfigured`, `CampaignStarted`, batches of 100 recipients) and reads the outcome from the
sink's arrivals and the sender's delivery ledger.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from faststream.rabbit import RabbitBroker

from bench import infra
from bench.processes import service_stack
from devtools.counting_sink import Arrival, SinkProcess
from devtools.stack import Stack
from shared.broker import declare_account_queue, declare_topology, publish_event
from shared.contracts import (
    AccountConfigured,
    AccountPaused,
    AccountResumed,
    CampaignStarted,
    Recipient,
    SendBatch,
    SenderIdentity,
    SmtpConnection,
    topology,
)

log = logging.getLogger(__name__)
# Stack.wait_ready polls /readyz with httpx, which logs every request at INFO.
logging.getLogger("httpx").setLevel(logging.WARNING)

BATCH_SIZE = 100
# A typical newsletter: personalised greeting, a few tracked links; ~3 KB on the wire once the
# sender adds its headers, the text alternative, the pixel and the unsubscribe footer.
_HTML = (
    "<h1>Olá, {{ nome }}</h1>"
    + "<p>Estas são as novidades do mês, com os cursos que começam em breve e as datas de inscrição."
    " Leia com calma e compartilhe com quem possa se interessar.</p>"
    * 6
    + "".join(f'<p><a href="https://example.org/cursos/{n}">Curso {n}</a></p>' for n in range(3))
)
_READY_TIMEOUT = 60.0


def recipients(campaign_id: int, count: int) -> list[Recipient]:
    """`count` distinct recipients of a campaign, numbered from 1."""
    return [
        Recipient(recipient_id=n, email=f"r{n}@c{campaign_id}.example.com", name=f"Pessoa {n}")
        for n in range(1, count + 1)
    ]


async def until(
    check: Callable[[], Awaitable[bool]], what: str, seconds: float, interval: float = 0.05
) -> float:
    """Poll `check` until it is true; the time.time() it became so. Raise on timeout."""
    deadline = time.monotonic() + seconds
    while True:
        if await check():
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {seconds:.0f} s")
        await asyncio.sleep(interval)


@dataclass
class SenderRig:
    """The running sender, its sink, a broker to publish with and a look into its database."""

    stack: Stack
    sink: SinkProcess
    broker: RabbitBroker
    # A pool: the benchmarks wait on several accounts and campaigns at once.
    db: asyncpg.Pool

    async def configure_account(self, account_id: int, rate: float, max_connections: int = 10) -> None:
        """Publish the account (SMTP to the sink, no TLS) and return once its consumer runs."""
        await declare_account_queue(self.broker, account_id)
        await publish_event(
            self.broker,
            AccountConfigured(
                account_id=account_id,
                name=f"bench {account_id}",
                transport="smtp",
                smtp=SmtpConnection(host="127.0.0.1", port=self.sink.port, security="none"),
                rate_per_second=rate,
                active=True,
                use_provider_limits=False,
                max_connections=max_connections,
            ),
        )
        queue = await self.broker.declare_queue(topology.account_queue(account_id))

        async def consumed() -> bool:
            declared = await queue.declare()
            return bool(declared.consumer_count)

        await until(consumed, f"a consumer on account {account_id}'s queue", _READY_TIMEOUT)

    async def start_campaign(self, campaign_id: int, account_id: int) -> None:
        """Publish the campaign's content and return once the sender has stored it."""
        await publish_event(
            self.broker,
            CampaignStarted(
                campaign_id=campaign_id,
                account_id=account_id,
                sender=SenderIdentity(name="Mailer", email="news@mailer.example.com"),
                subject="Novidades para {{ nome }}",
                html=_HTML,
                group_ids=[1],
                priority=5,
            ),
        )

        async def stored() -> bool:
            return bool(
                await self.db.fetchval(
                    "SELECT content IS NOT NULL FROM sender.campaigns WHERE campaign_id = $1", campaign_id
                )
            )

        await until(stored, f"campaign {campaign_id}'s content in the sender", _READY_TIMEOUT)

    async def send(self, campaign_id: int, account_id: int, to: Sequence[Recipient]) -> None:
        """Publish the recipients to the account's queue in batches of BATCH_SIZE, as audience does."""
        batches = [
            SendBatch(campaign_id=campaign_id, account_id=account_id, recipients=list(to[i : i + BATCH_SIZE]))
            for i in range(0, len(to), BATCH_SIZE)
        ]
        await asyncio.gather(
            *(
                self.broker.publish(
                    batch,
                    exchange=topology.SEND.name,
                    routing_key=topology.account_routing_key(account_id),
                    priority=5,
                    message_id=str(batch.event_id),
                    persist=True,
                )
                for batch in batches
            )
        )

    async def sent(self, campaign_id: int) -> int:
        """Deliveries of the campaign the ledger records as sent."""
        count: int = await self.db.fetchval(
            "SELECT count(*) FROM sender.deliveries WHERE campaign_id = $1 AND status = 'sent'", campaign_id
        )
        return count

    async def settled(self, seconds: float = 60.0) -> None:
        """Return once the sender's outbox relay has published every delivery event, so a
        measurement that follows does not share the CPU with it."""

        async def empty() -> bool:
            return not await self.db.fetchval("SELECT count(*) FROM sender.outbox")

        await until(empty, "the sender's outbox drained", seconds, interval=0.2)

    async def pause(self, account_id: int) -> float:
        """Publish `account.paused`; the time.time() just before publishing."""
        published = time.time()
        await publish_event(
            self.broker, AccountPaused(account_id=account_id, reason="bench", source="operator")
        )
        return published

    async def resume(self, account_id: int) -> float:
        """Publish `account.resumed`; the time.time() just before publishing."""
        published = time.time()
        await publish_event(
            self.broker, AccountResumed(account_id=account_id, reason="bench", source="operator")
        )
        return published

    async def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by the sender process, the sink process, the sender's PostgreSQL
        backends and the whole RabbitMQ node (shared with anything else using it)."""
        async with self.db.acquire() as conn:
            backends = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
                "mailer-sender",
            )
        assert self.sink.process is not None
        return {
            "sender": _cpu_seconds(self.stack.processes["sender"].pid),
            "sink": _cpu_seconds(self.sink.process.pid),
            "postgres (sender's backends)": sum(_cpu_seconds(row["pid"]) for row in backends),
            "rabbitmq (whole node)": sum(_cpu_seconds(pid) for pid in _pids_named("beam.smp")),
        }

    def arrivals(self) -> list[Arrival]:
        """What the sink accepted so far, oldest first."""
        return self.sink.arrivals()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _pids_named(command: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def cpu_per_message(before: dict[str, float], after: dict[str, float], messages: int) -> str:
    """Where CPU went between two `cpu_seconds` readings, in ms per message."""
    return ", ".join(
        f"{name} {(after[name] - before.get(name, 0.0)) / messages * 1000:.2f}" for name in after
    )


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _report_problems(path: Path) -> None:
    """Show the sender's warnings and errors (its log level is WARNING, but uvicorn's is not)."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    problems = [line for line in lines if " WARNING " in line or " ERROR " in line]
    if problems:
        log.warning(
            "the sender logged %d warnings or errors, the last ones:\n%s",
            len(problems),
            "\n".join(problems[-10:]),
        )


@asynccontextmanager
async def sender_rig(**settings: str) -> AsyncIterator[SenderRig]:
    """A fresh environment, a sink process and a ready sender process (extra env in `settings`);
    everything stopped and removed on the way out, also on error or Ctrl-C."""
    async with infra.environment() as env:
        with tempfile.TemporaryDirectory(prefix="mailer-bench-") as tmp:
            logs = Path(tmp) / "logs"
            sink = SinkProcess(Path(tmp) / "arrivals.jsonl")
            stack = service_stack(env, logs, **settings)
            broker = RabbitBroker(env.rabbitmq_url, logger=None)
            db: asyncpg.Pool | None = None
            try:
                await asyncio.to_thread(sink.start)
                stack.start("sender")
                await asyncio.to_thread(stack.wait_ready, _READY_TIMEOUT)
                await broker.connect()
                await declare_topology(broker)
                db = await asyncpg.create_pool(env.database_url, min_size=1, max_size=4)
                yield SenderRig(stack, sink, broker, db)
            except BaseException:
                log.error("sender log (end):\n%s", _tail(logs / "sender.log"))
                raise
            finally:
                if db is not None:
                    await db.close()
                await broker.stop()
                await asyncio.to_thread(stack.stop)
                await asyncio.to_thread(sink.stop)
                _report_problems(logs / "sender.log")
