"""Audience at a million recipients: a CSV import, and a remote group resolved and queued.

The audience service runs as its own process (as `make run` starts it), so its peak memory is
that of the service alone: `VmHWM` of `/proc/<pid>/status` read after the work.

- `audience.csv`: seconds to import a generated 1,000,000-row CSV (`nome;email;curso`, ~50 MB)
  through `POST /internal/v1/groups/{id}/csv`. Baseline: the same file COPYed raw into an
  unindexed table (asyncpg `copy_to_table`), PostgreSQL's floor for getting those rows in.
- `audience.remote`: seconds from `campaign.started` to the campaign `dispatched` (every
  recipient in a SendBatch on the account's queue) for a 1,000,000-record remote group served
  by `devtools/remote_group_server.py` (its own process) at 1,000 per page. Baseline: reading
  all its pages with a plain sequential httpx loop, the test server alone.
- `audience.csv.rss` / `audience.remote.rss`: peak MB of the audience process. Baseline: its
  resident memory once started, before any work.

The design targets are absolute (import < 30 s, resolve and queue < 60 s, each < 300 MB); a
figure's threshold is that target divided by the baseline measured in this run, so `ok` means
the target was met while the ratio shows the cost against the floor on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import asyncpg
import httpx

from bench import infra
from bench.figures import Figure
from devtools.smtp_sink import free_port
from devtools.stack import SERVICES, Stack
from shared.contracts import CampaignStarted, SenderIdentity, topology

log = logging.getLogger(__name__)

ROWS = 1_000_000
PAGE_SIZE = 1000
CSV_TARGET_S = 30.0
REMOTE_TARGET_S = 60.0
RSS_TARGET_MB = 300.0
_UPLOAD_CHUNK = 1 << 20


def _write_csv(path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("nome;email;curso\n")
        for start in range(1, ROWS + 1, 10_000):
            out.write(
                "".join(
                    f"Pessoa {i};pessoa{i}@example.com;Curso {i % 50}\n" for i in range(start, start + 10_000)
                )
            )


def _peak_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found for process {pid}")


@contextlib.contextmanager
def _audience(env: infra.Environment, logs: Path) -> Iterator[Stack]:
    stack = Stack(
        env={
            "DATABASE_URL": env.database_url,
            "RABBITMQ_URL": env.rabbitmq_url,
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "text",
            "REMOTE_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        },
        ports={name: free_port() for name in SERVICES},
        log_dir=logs,
    )
    stack.start("audience")
    try:
        stack.wait_ready(timeout=60)
        yield stack
    finally:
        stack.stop()


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(_UPLOAD_CHUNK):
            yield chunk


async def _raw_copy(database_url: str, path: Path) -> float:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TEMPORARY TABLE raw_rows (nome text, email text, curso text)")
        started = time.perf_counter()
        await conn.copy_to_table("raw_rows", source=path, format="csv", delimiter=";", header=True)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _csv(env: infra.Environment, work: Path) -> list[Figure]:
    path = work / "members.csv"
    await asyncio.to_thread(_write_csv, path)
    log.info("csv: %d rows, %.0f MB", ROWS, path.stat().st_size / 1e6)
    baseline = await _raw_copy(env.database_url, path)
    with _audience(env, work / "csv-logs") as stack:
        pid = stack.processes["audience"].pid
        idle = _peak_mb(pid, "VmRSS")
        async with httpx.AsyncClient(base_url=stack.url("audience"), timeout=600) as client:
            group = await client.post("/internal/v1/groups", json={"name": "Bench CSV", "kind": "csv"})
            group.raise_for_status()
            started = time.perf_counter()
            response = await client.post(
                f"/internal/v1/groups/{group.json()['group_id']}/csv",
                content=_file_chunks(path),
                headers={"Content-Type": "text/csv"},
            )
            elapsed = time.perf_counter() - started
        response.raise_for_status()
        done = response.json()
        if (done["imported"], done["invalid"]) != (ROWS, 0):
            raise RuntimeError(f"unexpected import outcome: {done}")
        peak = _peak_mb(pid)
    log.info(
        "csv: imported in %.1f s (raw COPY %.1f s), peak %.0f MB (idle %.0f MB)",
        elapsed,
        baseline,
        peak,
        idle,
    )
    return [
        Figure("audience.csv", elapsed, "s", baseline, CSV_TARGET_S / baseline, "<="),
        Figure("audience.csv.rss", peak, "MB", idle, RSS_TARGET_MB / idle, "<="),
    ]


@contextlib.contextmanager
def _remote_server() -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "devtools.remote_group_server",
        "--records", str(ROWS), "--page-size", str(PAGE_SIZE), "--port", str(port), "--token", "bench",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/grupo?token=bench"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}&pagina=1", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _read_all_pages(url: str) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as client:
        for page in range(1, ROWS // PAGE_SIZE + 1):
            response = await client.get(f"{url}&pagina={page}")
            response.raise_for_status()
            if len(response.json()["registros"]) != PAGE_SIZE:
                raise RuntimeError(f"page {page} is short")
    return time.perf_counter() - started


async def _dispatched(database_url: str, campaign_id: int) -> asyncpg.Record:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "audience"})
    try:
        while True:
            row = await conn.fetchrow("SELECT * FROM resolutions WHERE campaign_id = $1", campaign_id)
            if row is not None and row["status"] in ("dispatched", "failed"):
                return row
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def _remote(env: infra.Environment, work: Path) -> list[Figure]:
    with _remote_server() as url:
        baseline = await _read_all_pages(url)
        log.info("remote: the test server alone serves every page in %.1f s", baseline)
        with _audience(env, work / "remote-logs") as stack:
            pid = stack.processes["audience"].pid
            idle = _peak_mb(pid, "VmRSS")
            async with httpx.AsyncClient(base_url=stack.url("audience"), timeout=60) as client:
                group = await client.post(
                    "/internal/v1/groups", json={"name": "Bench remote", "kind": "remote", "url": url}
                )
                group.raise_for_status()
            event = CampaignStarted(
                campaign_id=1,
                account_id=1,
                sender=SenderIdentity(name="Bench", email="bench@example.com"),
                subject="Olá {{ nome }}",
                html="<p>Olá</p>",
                group_ids=[group.json()["group_id"]],
                priority=0,
            )
            connection = await aio_pika.connect(env.rabbitmq_url)
            try:
                channel = await connection.channel()
                exchange = await channel.get_exchange(topology.EVENTS.name)
                started, started_at = time.perf_counter(), datetime.now(UTC)
                await exchange.publish(
                    aio_pika.Message(event.model_dump_json().encode(), message_id=str(event.event_id)),
                    routing_key=event.routing_key,
                )
                row = await asyncio.wait_for(_dispatched(env.database_url, event.campaign_id), 600)
                elapsed = time.perf_counter() - started
                queued = await channel.declare_queue(topology.account_queue(1).name, passive=True)
                batches = queued.declaration_result.message_count
                await queued.purge()
            finally:
                await connection.close()
            peak = _peak_mb(pid)
    if row["status"] != "dispatched" or row["included"] != ROWS:
        raise RuntimeError(f"unexpected resolution: {dict(row)}")
    log.info(
        "remote: resolved after %.1f s, queued (%s batches) after %.1f s, peak %.0f MB (idle %.0f MB)",
        (row["resolved_at"] - started_at).total_seconds(),
        batches,
        elapsed,
        peak,
        idle,
    )
    return [
        Figure("audience.remote", elapsed, "s", baseline, REMOTE_TARGET_S / baseline, "<="),
        Figure("audience.remote.rss", peak, "MB", idle, RSS_TARGET_MB / idle, "<="),
    ]


async def run() -> list[Figure]:
    # httpx logs every request at INFO: a thousand page reads would bury the figures' context.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-audience-") as work:
        for measure in (_csv, _remote):
            async with infra.environment() as env:
                figures += await measure(env, Path(work))
    return figures
