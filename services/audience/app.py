"""Composition root of the audience service."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from services.audience import api, handlers
from services.audience.dispatcher import Dispatcher
from services.audience.settings import AudienceSettings
from shared.service import create_service


def create_app(
    settings: AudienceSettings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build the audience service (connections open in its lifespan, not here)."""
    settings = settings or AudienceSettings()
    dispatcher = Dispatcher(settings.SEND_BATCH_SIZE)

    return create_service(
        "audience",
        settings,
        title="Mailer audience (internal API)",
        routers=[handlers.router],
        api=[api.router],
        tracer_provider=tracer_provider,
        background=[dispatcher.run],
        state={"max_members": settings.MAX_GROUP_MEMBERS_PER_REQUEST, "dispatcher": dispatcher},
    )
