"""SIGKILL of the audience process while it reads a remote group: once restarted, the campaign is
resolved and queued whole, each recipient once, numbered without a gap.

Audience runs as a real process (as `make run` starts it); the remote group's page 3 answers
slowly the first time only, which holds the resolution half-way while the process is killed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest

from devtools.remote_group_server import RemoteGroupServer
from devtools.smtp_sink import free_port
from devtools.stack import SERVICES, Stack
from shared.contracts import SendBatch, topology
from tests.audience.support import campaign_started
from tests.support import eventually, unique_id

pytestmark = pytest.mark.connected

RECORDS = 20_000
PAGE_SIZE = 2000
SLOW_PAGE = 6  # after five pages: one COPY's worth of rows is staged when the process dies
BATCH = 1000


@pytest.fixture
def audience_process(database_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[Stack]:
    """The audience service alone, as a process; its log is printed when the test ends."""
    stack = Stack(
        env={
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": rabbitmq_url,
            "ENVIRONMENT": "test",
            "LOG_FORMAT": "text",
            "SEND_BATCH_SIZE": str(BATCH),
            "REMOTE_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
            "REMOTE_READ_TIMEOUT": "120",
        },
        # Every service gets a port (the stack derives URLs from them); only audience runs.
        ports={name: free_port() for name in SERVICES},
        log_dir=tmp_path / "logs",
    )
    stack.start("audience")
    try:
        stack.wait_ready(timeout=60)
        yield stack
    finally:
        stack.stop()
        for log in sorted((tmp_path / "logs").glob("*.log")):
            print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-6000:]}")


@pytest.fixture
def slow_server() -> Iterator[RemoteGroupServer]:
    server = RemoteGroupServer(records=RECORDS, page_size=PAGE_SIZE).start()
    yield server
    server.stop()


async def test_a_killed_resolution_resumes_without_gaps_or_duplicates(
    audience_process: Stack, slow_server: RemoteGroupServer, database_url: str, rabbitmq_url: str
) -> None:
    base = audience_process.url("audience")
    # Page 6 waits a minute, the first time only (attempts are counted per `run`).
    url = slow_server.url(fault="slow", fault_page=SLOW_PAGE, delay=60, failures=1, run=uuid.uuid4().hex)
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.post(
            "/internal/v1/groups", json={"name": "Polo", "kind": "remote", "url": url}
        )
    assert response.status_code == 201, response.text
    account_id = unique_id()
    started = campaign_started(account_id, [response.json()["group_id"]])
    connection = await aio_pika.connect(rabbitmq_url)
    database = await asyncpg.connect(database_url, server_settings={"search_path": "audience"})
    try:
        channel = await connection.channel()
        events = await channel.get_exchange(topology.EVENTS.name)
        await events.publish(
            aio_pika.Message(
                started.model_dump_json().encode(),
                message_id=str(started.event_id),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=started.routing_key,
        )

        async def half_way() -> bool:
            status = await database.fetchval(
                "SELECT status FROM resolutions WHERE campaign_id = $1", started.campaign_id
            )
            staged = await database.fetchval(
                "SELECT count(*) FROM staged_members WHERE campaign_id = $1", started.campaign_id
            )
            return status == "resolving" and staged >= 10_000

        await eventually(half_way, within=30)
        audience_process.kill("audience")
        status = await database.fetchval(
            "SELECT status FROM resolutions WHERE campaign_id = $1", started.campaign_id
        )
        assert status == "resolving"

        audience_process.start("audience")
        audience_process.wait_ready(timeout=60)

        async def dispatched() -> bool:
            status = await database.fetchval(
                "SELECT status FROM resolutions WHERE campaign_id = $1", started.campaign_id
            )
            return bool(status == "dispatched")

        await eventually(dispatched, within=60)
        row = await database.fetchrow("SELECT * FROM resolutions WHERE campaign_id = $1", started.campaign_id)
        # Other tests of the run may have suppressed or unsubscribed some of these addresses.
        excluded = {
            r["email_key"]
            for r in await database.fetch(
                "SELECT email_key FROM suppressions WHERE suppressed UNION SELECT email_key FROM unsubscribes"
            )
        }
        expected = [e for e in (f"pessoa{i}@example.com" for i in range(1, RECORDS + 1)) if e not in excluded]
        assert (row["attempts"], row["included"], row["duplicate"], row["invalid"]) == (
            2,
            len(expected),
            0,
            0,
        )
        assert row["included"] + row["suppressed"] + row["unsubscribed"] == RECORDS
        # The dispatcher declared the account's queue before its first batch.
        queue = await channel.declare_queue(topology.account_queue(account_id).name, passive=True)
        recipients: list[tuple[int, str]] = []

        async def all_queued() -> bool:
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                batch = SendBatch.model_validate(json.loads(message.body))
                recipients.extend((r.recipient_id, r.email) for r in batch.recipients)
            return len(recipients) >= len(expected)

        await eventually(all_queued, within=30)
        assert [rid for rid, _ in recipients] == list(range(1, len(expected) + 1))
        assert [email for _, email in recipients] == expected
        left = await database.fetchval(
            "SELECT count(*) FROM staged_members WHERE campaign_id = $1", started.campaign_id
        )
        assert left == 0
    finally:
        await database.close()
        await connection.close()
