"""Starting a campaign yields one trace: campaign's HTTP request → audience → sender → campaign.

The services run in this process with one tracer provider and an in-memory exporter; the
broker, the database and SMTP are real, so the context crosses real AMQP headers and outboxes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from devtools.smtp_sink import SmtpSink
from services.audience.app import create_app as create_audience
from services.audience.settings import AudienceSettings
from services.campaign.app import create_app as create_campaign
from services.campaign.audience_client import AudienceClient
from services.campaign.settings import DEV_CAMPAIGN_API_TOKEN, CampaignSettings
from services.sender.app import create_app as create_sender
from services.sender.settings import SenderSettings
from shared.contracts import CampaignRecipientsResolved, CampaignStarted, MessageSent, topology
from tests.support import eventually, running

pytestmark = pytest.mark.connected


def _consumed(spans: list[ReadableSpan], trace_id: int) -> set[str]:
    """Names of the consumer spans of the trace: `<exchange>.<routing key> process`."""
    return {
        span.name
        for span in spans
        if span.context is not None and span.context.trace_id == trace_id and span.kind is SpanKind.CONSUMER
    }


async def test_one_trace_spans_the_whole_campaign(
    make_settings: Callable[..., Any], own_vhost: str, sink: SmtpSink
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    audience_app = create_audience(
        make_settings(AudienceSettings, RABBITMQ_URL=own_vhost), tracer_provider=provider
    )
    audience_client = AudienceClient("http://audience", transport=httpx.ASGITransport(app=audience_app))
    campaign_app = create_campaign(
        make_settings(CampaignSettings, RABBITMQ_URL=own_vhost),
        tracer_provider=provider,
        audience=audience_client,
    )
    sender_app = create_sender(
        make_settings(SenderSettings, RABBITMQ_URL=own_vhost), tracer_provider=provider
    )

    async with AsyncExitStack() as stack:
        api = await stack.enter_async_context(running(campaign_app))
        audience = await stack.enter_async_context(running(audience_app))
        await stack.enter_async_context(running(sender_app))
        api.base_url = httpx.URL("http://test/api/v1")
        api.headers["Authorization"] = f"Bearer {DEV_CAMPAIGN_API_TOKEN}"
        account = await api.post(
            "/accounts",
            json={"name": f"trace-{uuid.uuid4().hex[:8]}", "transport": "smtp",
                  "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none"}},
        )  # fmt: skip
        account_id = account.json()["account_id"]
        sender = await api.post(
            "/sender-addresses",
            json={
                "account_id": account_id,
                "name": "Trace",
                "email": f"{uuid.uuid4().hex[:8]}@trace.example",
            },
        )
        group = await audience.post(
            "/internal/v1/groups",
            json={"name": "trace", "members": [{"email": "t@example.com", "name": "T"}]},
        )
        campaign = await api.post(
            "/campaigns",
            json={"name": "trace", "sender_address_id": sender.json()["sender_address_id"],
                  "group_ids": [group.json()["group_id"]], "subject": "Oi {{ nome }}", "html": "<p>{{ nome }}</p>"},
        )  # fmt: skip
        campaign_id = campaign.json()["campaign_id"]
        exporter.clear()

        assert (await api.post(f"/campaigns/{campaign_id}/start")).status_code == 202

        async def completed() -> bool:
            return (await api.get(f"/campaigns/{campaign_id}")).json()["status"] == "completed"

        await eventually(completed, within=30)

        spans = list(exporter.get_finished_spans())
        (request,) = [
            s for s in spans if s.kind is SpanKind.SERVER and "/start" in s.name and s.context is not None
        ]
        assert request.context is not None
        trace_id = request.context.trace_id

        async def whole_trace() -> set[str]:
            consumed = _consumed(list(exporter.get_finished_spans()), trace_id)
            expected = {
                # audience (and sender) consume the start...
                f"{topology.EVENTS.name}.{CampaignStarted.routing_key} process",
                # ...campaign the resolution...
                f"{topology.EVENTS.name}.{CampaignRecipientsResolved.routing_key} process",
                # ...sender the batches audience's dispatcher queued...
                f"{topology.SEND.name}.{topology.account_routing_key(account_id)} process",
                # ...and campaign the outcome the sender's outbox published.
                f"{topology.EVENTS.name}.{MessageSent.routing_key} process",
            }
            missing = expected - consumed
            assert not missing, f"not in the trace: {missing}; consumed in it: {sorted(consumed)}"
            return consumed

        await eventually(whole_trace, within=10)
        sends = [
            s for s in exporter.get_finished_spans() if s.name == "smtp send" and s.kind is SpanKind.CLIENT
        ]
        assert [s.context.trace_id for s in sends if s.context is not None] == [trace_id]
        assert sink.count_by_recipient()["t@example.com"] == 1
