"""Composition root of the sender service."""

from __future__ import annotations

import os
import socket
import uuid

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from services.sender import handlers, test_send
from services.sender.accounts import PaceFactory, SendingAccounts, TransportFactory, transport_factory
from services.sender.control import Control
from services.sender.pacing import pace_factory
from services.sender.sending import CompiledCampaigns, Sender
from services.sender.settings import SenderSettings
from shared.crypto import SecretBox
from shared.files import file_store
from shared.links import LinkSigner, TrackingLinks
from shared.service import Runtime, create_service
from shared.telemetry import make_tracer_provider


def create_app(
    settings: SenderSettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    make_transport: TransportFactory | None = None,
    make_pace: PaceFactory | None = None,
) -> FastAPI:
    """Build the sender service; tests may pass their own transport and pace factories."""
    settings = settings or SenderSettings()
    provider = tracer_provider or make_tracer_provider("sender", settings.OTEL_EXPORTER_OTLP_ENDPOINT)
    control = Control()
    accounts = SendingAccounts(
        handlers.send_batch,
        make_transport or transport_factory(SecretBox(settings.SECRET_KEYS), settings.SMTP_TIMEOUT_SECONDS),
        make_pace or pace_factory(settings.HOLD_CONSUMER_AFTER_SECONDS),
        settings.ACCOUNT_PREFETCH,
        control,
    )
    sender = Sender(
        accounts=accounts,
        campaigns=CompiledCampaigns(file_store(settings.FILE_STORE_URL)),
        control=control,
        # Names this process in the delivery ledger: a claim by any other name whose row is still
        # in flight was left by a process that is gone.
        instance=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
        resend_indeterminate=settings.RESEND_INDETERMINATE,
        tracer=provider.get_tracer("mailer.sender"),
    )

    async def close_accounts(_: Runtime) -> None:
        await accounts.close()

    return create_service(
        "sender",
        settings,
        title="Mailer sender",
        routers=[handlers.router, test_send.router],
        tracer_provider=provider,
        on_broker_started=handlers.start,
        on_shutdown=close_accounts,
        state={
            "sender": sender,
            "links": TrackingLinks(
                settings.TRACKING_BASE_URL,
                LinkSigner(settings.TRACKING_SIGNING_KEYS),
                settings.UNSUBSCRIBE_MAILTO_DOMAIN,
            ),
        },
    )
