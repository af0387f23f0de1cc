"""Composition root of the audience service."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from services.audience import api, handlers
from services.audience.dispatcher import Dispatcher
from services.audience.remote import RemoteOptions, fetch_remote_group
from services.audience.resolution import FetchRemote, Remote
from services.audience.settings import AudienceSettings
from shared.crypto import SecretBox
from shared.service import create_service


def create_app(
    settings: AudienceSettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    remote_options: RemoteOptions | None = None,
    fetch_remote: FetchRemote = fetch_remote_group,
) -> FastAPI:
    """Build the audience service (connections open in its lifespan, not here). Tests may pass
    remote options (e.g. a resolver) and a fetcher of their own."""
    settings = settings or AudienceSettings()
    dispatcher = Dispatcher(settings.SEND_BATCH_SIZE, settings.SEND_BATCHES_PER_CHECKPOINT)
    remote = Remote(
        fetch_remote, remote_options or RemoteOptions.from_settings(settings), SecretBox(settings.SECRET_KEYS)
    )

    return create_service(
        "audience",
        settings,
        title="Mailer audience (internal API)",
        routers=[handlers.router],
        api=[api.router],
        tracer_provider=tracer_provider,
        background=[dispatcher.run],
        state={
            "max_members": settings.MAX_GROUP_MEMBERS_PER_REQUEST,
            "csv_max_bytes": settings.CSV_MAX_BYTES,
            "dispatcher": dispatcher,
            "remote": remote,
        },
    )
