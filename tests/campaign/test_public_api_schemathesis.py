"""Schemathesis against the public API's OpenAPI document: requests generated from the schema
(valid and invalid, with a valid API key) never get a server error, and the answers match the
documented schemas. Campaign, audience and sender run as real processes (a group id reaches
audience, a test send reaches the sender and a local SMTP sink); examples are bounded so the
run stays well under a minute."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from devtools.smtp_sink import SmtpSink, free_port
from devtools.stack import Stack
from services.campaign.settings import DEV_CAMPAIGN_API_TOKEN

pytestmark = pytest.mark.connected

_KEY: dict[str, str] = {}


@pytest.fixture(scope="module")
def public_schema(
    database_url: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The public part of campaign's OpenAPI document, served by a running campaign."""
    sink = SmtpSink().start()
    stack = Stack(
        env={
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": rabbitmq_url,
            "ENVIRONMENT": "test",
            "LOG_FORMAT": "text",
        },
        ports={name: free_port() for name in ("campaign", "audience", "sender", "bounce", "tracking")},
        log_dir=Path(tmp_path_factory.mktemp("schemathesis-logs")),
    )
    for service in ("campaign", "audience", "sender"):
        stack.start(service)
    try:
        stack.wait_ready(timeout=60)
        api = httpx.Client(
            base_url=f"{stack.url('campaign')}/api/v1",
            timeout=30,
            headers={"Authorization": f"Bearer {DEV_CAMPAIGN_API_TOKEN}"},
        )
        tag = uuid.uuid4().hex[:8]
        account = api.post(
            "/accounts",
            json={
                "name": f"Schemathesis {tag}",
                "transport": "smtp",
                "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none"},
            },
        )
        assert account.status_code == 201, account.text
        sender = api.post(
            "/sender-addresses",
            json={
                "account_id": account.json()["account_id"],
                "name": "Polo",
                "email": f"avisos.{tag}@polo.example",
            },
        )
        assert sender.status_code == 201, sender.text
        key = api.post(
            "/api-keys",
            json={
                "system": f"schemathesis-{tag}",
                "name": "fuzz",
                "sender_address_ids": [sender.json()["sender_address_id"]],
                "rate_per_minute": 1_000_000,
            },
        )
        assert key.status_code == 201, key.text
        _KEY["token"] = key.json()["token"]
        # The public API's own document, the one other systems are given.
        yield schemathesis.openapi.from_url(f"{stack.url('campaign')}/public/v1/openapi.json")
    finally:
        stack.stop()
        sink.stop()
        for log in sorted(stack.log_dir.glob("*.log")) if stack.log_dir else []:
            print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-4000:]}")


# Examples per operation: with 7 operations this stays well under a minute.
EXAMPLES = 30


def test_public_api_has_no_server_error(public_schema: Any) -> None:
    # Driven by hand rather than by `schemathesis.pytest.from_fixture`, whose pytest plugin does
    # not work with this pytest; each operation is a Hypothesis test of its own.
    operations = [result.ok() for result in public_schema.get_all_operations()]
    assert len(operations) >= 5, [op.label for op in operations]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {_KEY['token']}"},
                checks=[not_a_server_error, response_schema_conformance],
                timeout=45,
            )

        check()
