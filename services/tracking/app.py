"""Composition root of the tracking service."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from services.tracking import api
from services.tracking.settings import TrackingSettings
from shared.links import LinkSigner
from shared.service import create_service


def create_app(
    settings: TrackingSettings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build the tracking service (connections open in its lifespan, not here)."""
    settings = settings or TrackingSettings()
    return create_service(
        "tracking",
        settings,
        title="Mailer tracking",
        api=[api.router],
        tracer_provider=tracer_provider,
        state={"signer": LinkSigner(settings.TRACKING_SIGNING_KEYS)},
    )
