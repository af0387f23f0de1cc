"""Composition root of the bounce service."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from services.bounce import handlers
from services.bounce.settings import BounceSettings
from shared.service import create_service


def create_app(
    settings: BounceSettings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build the bounce service (connections open in its lifespan, not here)."""
    return create_service(
        "bounce",
        settings or BounceSettings(),
        title="Mailer bounce",
        routers=[handlers.router],
        tracer_provider=tracer_provider,
    )
