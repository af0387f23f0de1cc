"""send.requested over RabbitMQ: accepted as an API send (a repeat is accepted again with the same
ids), refused with send.rejected and a reason when it cannot be, never half-created."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aio_pika
import httpx
import pytest

from shared.broker import publish_event
from shared.contracts import SendRecipient, SendRequested, topology
from tests.support import eventually

pytestmark = pytest.mark.connected


@pytest.fixture(autouse=True)
def _as_a_service(api: httpx.AsyncClient) -> None:
    """The admin endpoints answer administrators: the internal service token is one."""
    settings = api.app.state.runtime.settings  # type: ignore[attr-defined]
    api.headers["Authorization"] = f"Bearer {settings.CAMPAIGN_API_TOKEN}"


async def _setup(api: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    account = await api.post(
        "/accounts",
        json={
            "name": f"c-{uuid.uuid4().hex[:8]}",
            "transport": "smtp",
            "smtp": {"host": "smtp.example", "port": 587},
        },
    )
    sender = await api.post(
        "/sender-addresses",
        json={
            "account_id": account.json()["account_id"],
            "name": "Polo",
            "email": f"{uuid.uuid4().hex[:8]}@polo.example",
        },
    )
    system = f"polo-{uuid.uuid4().hex[:8]}"
    key = await api.post(
        "/api-keys",
        json={"system": system, "name": "bus", "sender_address_ids": [sender.json()["sender_address_id"]]},
    )
    assert key.status_code == 201, key.text
    return system, dict(sender.json())


def _request(system: str, key: str, **fields: Any) -> SendRequested:
    return SendRequested.model_validate(
        {
            "system": system,
            "idempotency_key": key,
            "recipients": [SendRecipient(email="ana@example.org", name="Ana").model_dump()],
            "subject": "Oi {{ nome }}",
            "html": "<p>Oi {{ nome }}</p>",
        }
        | fields
    )


class Answers:
    """send.accepted / send.rejected seen so far (the events fixture drains its queues)."""

    def __init__(self, events: Any) -> None:
        self.events = events
        self.seen: list[dict[str, Any]] = []

    async def of(self, system: str, count: int) -> list[dict[str, Any]]:
        async def arrived() -> list[dict[str, Any]]:
            for routing_key in ("send.accepted", "send.rejected"):
                self.seen += [{"routing_key": routing_key, **e} for e in await self.events(routing_key)]
            mine = [a for a in self.seen if a["system"] == system]
            return mine if len(mine) >= count else []

        return await eventually(arrived, within=20)


async def test_accepted_repeated_and_rejected(api: httpx.AsyncClient, events: Any, db: Any) -> None:
    await events.listen("send.accepted")
    await events.listen("send.rejected")
    system, sender = await _setup(api)
    broker = api.app.state.runtime.broker  # type: ignore[attr-defined]
    first = _request(system, "k1", sender=sender["email"])
    await publish_event(broker, first)
    await publish_event(broker, _request(system, "k1", sender=sender["email"]))  # a repeat
    await publish_event(broker, _request(system, "k1", sender=sender["email"], subject="Outro"))
    await publish_event(broker, _request(system, "k2", message_type="boleto"))
    await publish_event(broker, _request(f"{system}-unknown", "k3", sender=sender["email"]))
    seen = Answers(events)
    answers = await seen.of(system, 4)
    accepted = [a for a in answers if a["routing_key"] == "send.accepted"]
    rejected = {a["idempotency_key"]: a for a in answers if a["routing_key"] == "send.rejected"}
    assert len(accepted) == 2 and accepted[0]["send_id"] == accepted[1]["send_id"]
    assert accepted[0]["sender"] == sender["email"]
    assert (rejected["k1"]["code"], rejected["k2"]["code"]) == ("idempotency_conflict", "unknown_route")
    assert await db.fetchval("SELECT count(*) FROM campaign.api_sends WHERE system = $1", system) == 1
    channel_row = await db.fetchval("SELECT channel FROM campaign.api_sends WHERE system = $1", system)
    assert channel_row == "amqp"
    unknown = await seen.of(f"{system}-unknown", 1)
    assert unknown[0]["code"] == "unknown_system"


async def test_a_request_breaking_the_contract_is_rejected_with_reasons(
    api: httpx.AsyncClient, events: Any, rabbitmq_url: str
) -> None:
    await events.listen("send.accepted")
    await events.listen("send.rejected")
    system, _ = await _setup(api)
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.EVENTS.name)
        body = {"system": system, "idempotency_key": "bad", "recipients": [], "subject": "x"}
        await exchange.publish(aio_pika.Message(json.dumps(body).encode()), routing_key="send.requested")
    finally:
        await connection.close()
    [answer] = await Answers(events).of(system, 1)
    assert answer["code"] == "invalid" and "recipients" in answer["reason"]
