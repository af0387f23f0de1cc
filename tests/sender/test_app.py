"""The composed sender service: probes, and its own SMTP transport sending into a real sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from devtools.smtp_sink import SmtpSink
from services.sender.app import create_app
from services.sender.settings import SenderSettings
from shared.contracts import AccountConfigured, SmtpConnection, headers
from tests.sender.conftest import DeliveryEvents, RunningSender
from tests.sender.examples import a_batch, a_campaign, a_recipient, unique_id
from tests.sender.fakes import RecordingTransports
from tests.support import eventually, running

pytestmark = pytest.mark.connected


@pytest.fixture
async def real_sender(make_settings: Callable[..., Any]) -> AsyncIterator[RunningSender]:
    """The sender as deployed: no transport passed in, so each account gets its real one."""
    app = create_app(make_settings(SenderSettings))
    async with running(app) as client:
        yield RunningSender(app, client, RecordingTransports())


class TestCreateApp:
    async def test_is_alive_and_ready_with_broker_and_database(self, real_sender: RunningSender) -> None:
        assert (await real_sender.client.get("/healthz")).json() == {"status": "ok"}
        ready = await real_sender.client.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"broker": True, "database": True})

    async def test_sends_through_the_accounts_smtp_server(
        self, real_sender: RunningSender, sink: SmtpSink, delivery_events: DeliveryEvents
    ) -> None:
        account = AccountConfigured(
            account_id=unique_id(),
            name="Sink",
            transport="smtp",
            smtp=SmtpConnection(host="127.0.0.1", port=sink.port, security="none"),
            rate_per_second=100,
            active=True,
        )
        await real_sender.configure(account)
        campaign = a_campaign(account.account_id, subject="Olá, {{ nome }}")
        await real_sender.start_campaign(campaign)
        ana = a_recipient(1, name="Ana Souza")
        bruno = a_recipient(2, name="Bruno Lima")

        await real_sender.publish_batch(a_batch(campaign, [ana, bruno]))

        async def delivered() -> bool:
            assert await real_sender.statuses(campaign.campaign_id) == {1: "sent", 2: "sent"}
            return True

        await eventually(delivered)
        assert sink.count_by_recipient() == {ana.email: 1, bruno.email: 1}
        rows = await real_sender.deliveries(campaign.campaign_id)
        for message in sink.received():
            recipient = ana if message.recipients == (ana.email,) else bruno
            assert message.envelope_from == campaign.sender.email
            assert message.message["Subject"] == f"Olá, {recipient.name}"
            assert message.message[headers.CAMPAIGN_ID_HEADER] == str(campaign.campaign_id)
            # SMTP has no provider id: the ledger keeps our Message-ID, which feedback refers to.
            assert (
                rows[recipient.recipient_id]["provider_message_id"] == message.message["Message-ID"].strip()
            )
        events = await delivery_events.wait_for(campaign.campaign_id, 2)
        assert {e.email for e in events} == {ana.email, bruno.email}
