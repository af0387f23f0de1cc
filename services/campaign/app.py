"""Composition root of the campaign service."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from services.campaign import api, console, handlers, public_api, send_handlers
from services.campaign.audience_client import AudienceClient
from services.campaign.settings import CampaignSettings
from shared.service import Runtime, create_service


def create_app(
    settings: CampaignSettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    audience: AudienceClient | None = None,
) -> FastAPI:
    """Build the campaign service (connections open in its lifespan, not here)."""
    settings = settings or CampaignSettings()
    audience = audience or AudienceClient(settings.AUDIENCE_URL)

    async def close_audience(_: Runtime) -> None:
        await audience.aclose()

    app = create_service(
        "campaign",
        settings,
        title="Mailer campaign API",
        routers=[handlers.router, send_handlers.router],
        api=[api.router, public_api.router, public_api.admin_router],
        tracer_provider=tracer_provider,
        on_shutdown=close_audience,
        state={"audience": audience},
    )
    console.install(app, settings)
    return app
