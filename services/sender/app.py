"""Composition root of the sender service."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from services.sender import handlers
from services.sender.accounts import SendingAccounts, TransportFactory, transport_factory
from services.sender.sending import CompiledCampaigns
from services.sender.settings import SenderSettings
from shared.crypto import SecretBox
from shared.links import LinkSigner, TrackingLinks
from shared.service import Runtime, create_service


def create_app(
    settings: SenderSettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    make_transport: TransportFactory | None = None,
) -> FastAPI:
    """Build the sender service; tests may pass their own transport factory."""
    settings = settings or SenderSettings()
    accounts = SendingAccounts(
        handlers.send_batch,
        make_transport or transport_factory(SecretBox(settings.SECRET_KEYS), settings.SMTP_TIMEOUT_SECONDS),
        settings.ACCOUNT_PREFETCH,
    )

    async def close_accounts(_: Runtime) -> None:
        await accounts.close()

    return create_service(
        "sender",
        settings,
        title="Mailer sender",
        routers=[handlers.router],
        tracer_provider=tracer_provider,
        on_broker_started=handlers.start_known_accounts,
        on_shutdown=close_accounts,
        state={
            "accounts": accounts,
            "campaigns": CompiledCampaigns(),
            "links": TrackingLinks(settings.TRACKING_BASE_URL, LinkSigner(settings.TRACKING_SIGNING_KEYS)),
        },
    )
