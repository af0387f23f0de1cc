"""Composition root of the bounce service."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from services.bounce import api as bounce_api
from services.bounce import handlers
from services.bounce.settings import BounceSettings
from shared.service import Runtime, create_service


def create_app(
    settings: BounceSettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    sns_http: httpx.AsyncClient | None = None,
) -> FastAPI:
    """Build the bounce service (connections open in its lifespan, not here)."""
    settings = settings or BounceSettings()
    app = create_service(
        "bounce",
        settings,
        title="Mailer bounce",
        routers=[handlers.router],
        api=[bounce_api.router],
        tracer_provider=tracer_provider,
    )
    runtime: Runtime = app.state.runtime
    # Certificates and confirmations go to SNS hosts only; tests pass a client that trusts their
    # local certificate authority.
    runtime.state.update(bounce_api.sns_state(settings, sns_http or httpx.AsyncClient(timeout=10)))
    return app
