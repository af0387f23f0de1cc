"""Resolution of started campaigns over every kind of group, through the real broker: counts,
the suppression and unsubscribe copies kept by events, and the ways a campaign fails."""

from __future__ import annotations

import uuid
from typing import Any

import aio_pika
import pytest

from devtools.remote_group_server import RemoteGroupServer
from shared.broker import declare_account_queue, publish_event
from shared.contracts import (
    AddressSuppressed,
    AddressUnsuppressed,
    CampaignFailed,
    CampaignRecipientsResolved,
    CampaignStarted,
    RecipientUnsubscribed,
    SendBatch,
    topology,
)
from shared.contracts.events import Event
from tests.audience.support import Audience, about, campaign_started, collect, listen_to_events, waiting
from tests.support import eventually, unique_id

pytestmark = pytest.mark.connected

Channel = aio_pika.abc.AbstractChannel
GROUPS = "/internal/v1/groups"


async def _group(audience: Audience, **body: Any) -> int:
    response = await audience.client.post(GROUPS, json={"name": f"group-{uuid.uuid4().hex[:12]}", **body})
    assert response.status_code == 201, response.text
    group_id: int = response.json()["group_id"]
    return group_id


async def _csv_group(audience: Audience, data: str, name: str | None = None) -> int:
    group_id = await _group(audience, kind="csv", **({"name": name} if name else {}))
    response = await audience.client.post(f"{GROUPS}/{group_id}/csv", content=data.encode())
    assert response.status_code == 201, response.text
    return group_id


async def _tell(audience: Audience, event: Event) -> None:
    """Publish an event to audience and wait until its handler succeeded."""
    await publish_event(audience.runtime.broker, event)
    assert await audience.handled.wait_for(str(event.event_id)) == [None]


async def _outcome(
    audience: Audience, channel: Channel, started: CampaignStarted
) -> aio_pika.abc.AbstractIncomingMessage:
    events = await listen_to_events(
        channel, CampaignRecipientsResolved.routing_key, CampaignFailed.routing_key
    )
    await publish_event(audience.runtime.broker, started)
    [message] = about(
        started.campaign_id, await collect(events, lambda ms: bool(about(started.campaign_id, ms)))
    )
    return message


async def _account_queue(audience: Audience, channel: Channel, account_id: int) -> aio_pika.abc.AbstractQueue:
    await declare_account_queue(audience.runtime.broker, account_id)
    return await channel.declare_queue(topology.account_queue(account_id).name, passive=True)


class TestResolution:
    async def test_static_csv_and_remote_groups_resolve_deduplicated_less_suppressed_and_unsubscribed(
        self, audience: Audience, channel: Channel, remote_server: RemoteGroupServer
    ) -> None:
        # Remote: pessoa1..pessoa25@example.com. The others overlap it and each other.
        static = await _group(
            audience,
            members=[
                {"email": "PESSOA3@example.com", "name": "Três (estático)"},
                {"email": "extra1@example.com"},
                {"email": "pessoa5@example.com"},
            ],
        )
        csv_group = await _csv_group(
            audience, "email;nome\npessoa3@example.com;Três (csv)\nextra2@example.com;Extra 2\nsem-arroba;X\n"
        )
        remote = await _group(audience, kind="remote", url=remote_server.url())
        await _tell(audience, AddressSuppressed(email=" Pessoa7@EXAMPLE.com", reason="bounce"))
        await _tell(audience, AddressSuppressed(email="pessoa8@example.com", reason="complaint"))
        await _tell(audience, AddressUnsuppressed(email="pessoa8@example.com"))
        await _tell(audience, RecipientUnsubscribed(email="pessoa9@example.com", scope="all"))
        await _tell(
            audience, RecipientUnsubscribed(email="pessoa10@example.com", scope="campaign", campaign_id=1)
        )
        account_id = unique_id()
        queue = await _account_queue(audience, channel, account_id)
        started = campaign_started(account_id, [static, csv_group, remote])

        message = await _outcome(audience, channel, started)

        assert message.routing_key == CampaignRecipientsResolved.routing_key
        resolved = CampaignRecipientsResolved.model_validate_json(message.body)
        # Read: 3 static + 2 valid CSV (its invalid row stayed in the import report) + 25 remote = 30;
        # pessoa3 twice more and pessoa5 once more are duplicates; pessoa7 suppressed, pessoa9 unsubscribed.
        assert (resolved.included, resolved.duplicate, resolved.invalid) == (25, 3, 0)
        assert (resolved.suppressed, resolved.unsubscribed) == (1, 1)
        await audience.dispatched(started.campaign_id)
        staged = await audience.staged(started.campaign_id)
        assert [r[0] for r in staged] == list(range(1, 26))
        assert staged[:5] == [
            (1, "PESSOA3@example.com", "Três (estático)"),
            (2, "extra1@example.com", ""),
            (3, "pessoa5@example.com", ""),
            (4, "extra2@example.com", "Extra 2"),
            (5, "pessoa1@example.com", "Pessoa 1"),
        ]
        emails = [e.lower() for _, e, _ in staged]
        assert len(set(emails)) == 25
        assert {"pessoa7@example.com", "pessoa9@example.com"}.isdisjoint(emails)
        assert {"pessoa8@example.com", "pessoa10@example.com"} <= set(emails)
        batches = [
            SendBatch.model_validate_json(m.body) for m in await collect(queue, lambda ms: len(ms) >= 13)
        ]
        assert [r.recipient_id for b in batches for r in b.recipients] == list(range(1, 26))

    async def test_a_remote_group_that_breaks_fails_the_campaign_naming_the_group_and_page(
        self, audience: Audience, channel: Channel, remote_server: RemoteGroupServer
    ) -> None:
        static = await _group(audience, members=[{"email": "ana@example.com"}])
        remote = await _group(
            audience, name="Polo Norte", kind="remote", url=remote_server.url(fault="short", fault_page=2)
        )
        account_id = unique_id()
        queue = await _account_queue(audience, channel, account_id)
        started = campaign_started(account_id, [static, remote])

        message = await _outcome(audience, channel, started)

        assert message.routing_key == CampaignFailed.routing_key
        failed = CampaignFailed.model_validate_json(message.body)
        assert failed.reason == "grupo 'Polo Norte' (página 2): página incompleta: 9 registros, esperados 10"
        assert "segredo" not in failed.reason
        resolution = await audience.resolution(started.campaign_id)
        assert resolution is not None
        assert (resolution["status"], resolution["failure_reason"]) == ("failed", failed.reason)
        assert await audience.staged(started.campaign_id) == []
        async with audience.runtime.pool.acquire() as conn:
            left = await conn.fetchval(
                "SELECT count(*) FROM staged_members WHERE campaign_id = $1", started.campaign_id
            )
        assert left == 0
        assert await waiting(channel, queue.name) == 0

    async def test_a_custom_field_a_group_lacks_fails_the_campaign_before_anything_is_read(
        self, audience: Audience, channel: Channel
    ) -> None:
        with_course = await _csv_group(audience, "email,curso\nana@example.com,Letras\n")
        without = await _csv_group(audience, "email,turma\nbia@example.com,A\n", name="Alunos")
        started = campaign_started(
            unique_id(), [with_course, without], html="<p>{{ nome }}, curso {{ curso }}</p>"
        )

        message = await _outcome(audience, channel, started)

        assert message.routing_key == CampaignFailed.routing_key
        reason = CampaignFailed.model_validate_json(message.body).reason
        assert reason == "campo de personalização 'curso' não existe no grupo 'Alunos'"

    async def test_custom_fields_every_group_has_reach_the_recipients(
        self, audience: Audience, channel: Channel
    ) -> None:
        first = await _csv_group(audience, "email,curso\nana@example.com,Letras\n")
        second = await _group(audience, members=[{"email": "bia@example.com", "fields": {"curso": "Física"}}])
        account_id = unique_id()
        queue = await _account_queue(audience, channel, account_id)
        started = campaign_started(
            account_id, [first, second], subject="{{ curso }}", text="Olá {{ name }} {{ email }}"
        )

        message = await _outcome(audience, channel, started)

        assert message.routing_key == CampaignRecipientsResolved.routing_key
        [batch] = [
            SendBatch.model_validate_json(m.body) for m in await collect(queue, lambda ms: len(ms) >= 1)
        ]
        assert [(r.email, r.fields) for r in batch.recipients] == [
            ("ana@example.com", {"curso": "Letras"}),
            ("bia@example.com", {"curso": "Física"}),
        ]

    async def test_a_template_that_does_not_compile_fails_the_campaign(
        self, audience: Audience, channel: Channel
    ) -> None:
        group = await _group(audience, members=[{"email": "ana@example.com"}])
        started = campaign_started(unique_id(), [group], html="<p>{{ nome </p>")

        message = await _outcome(audience, channel, started)

        assert message.routing_key == CampaignFailed.routing_key
        assert CampaignFailed.model_validate_json(message.body).reason.startswith("modelo inválido: ")


class TestSuppressionCopies:
    async def test_the_events_keep_audiences_copies(self, audience: Audience) -> None:
        email = f"Copia.{uuid.uuid4().hex[:8]}@Example.COM"
        key = email.lower()

        async def row(table: str) -> Any:
            async with audience.runtime.pool.acquire() as conn:
                return await conn.fetchrow(f"SELECT * FROM {table} WHERE email_key = $1", key)

        await _tell(audience, AddressSuppressed(email=email, reason="bounce", diagnostic="550"))
        assert ((await row("suppressions"))["suppressed"], (await row("suppressions"))["reason"]) == (
            True,
            "bounce",
        )
        await _tell(audience, AddressUnsuppressed(email=email))
        assert (await row("suppressions"))["suppressed"] is False
        await _tell(audience, RecipientUnsubscribed(email=email, scope="campaign", campaign_id=5))
        assert await row("unsubscribes") is None
        await _tell(audience, RecipientUnsubscribed(email=email, scope="all", reason="spam"))
        assert (await row("unsubscribes"))["reason"] == "spam"

    async def test_the_same_event_twice_changes_nothing_more(self, audience: Audience) -> None:
        email = f"twice.{uuid.uuid4().hex[:8]}@example.com"
        event = AddressSuppressed(email=email, reason="bounce")
        await _tell(audience, event)
        await _tell(audience, AddressUnsuppressed(email=email))

        await publish_event(audience.runtime.broker, event)

        assert await audience.handled.wait_for(str(event.event_id), times=2) == [None, None]

        async def unsuppressed() -> bool:
            async with audience.runtime.pool.acquire() as conn:
                return (
                    await conn.fetchval("SELECT suppressed FROM suppressions WHERE email_key = $1", email)
                    is False
                )

        assert await eventually(unsuppressed)
