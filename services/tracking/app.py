"""Composition root of the tracking service."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from services.tracking import api
from services.tracking.event_buffer import EventBuffer
from services.tracking.machines import ClickBursts
from services.tracking.settings import TrackingSettings
from shared.broker import publish_event
from shared.links import LinkSigner
from shared.service import Runtime, create_service


def _events(runtime: Runtime) -> EventBuffer:
    tracker: api.Tracker = runtime.state["tracker"]
    return tracker.events


async def _publish_events(runtime: Runtime) -> None:
    await runtime.broker_started.wait()
    await _events(runtime).run(partial(publish_event, runtime.broker))


def create_app(
    settings: TrackingSettings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build the tracking service (connections open in its lifespan, not here)."""
    settings = settings or TrackingSettings()

    async def flush_events(runtime: Runtime) -> None:
        # Runs after the publishing loop was cancelled and before the broker stops.
        if runtime.broker_started.is_set():
            await _events(runtime).drain(
                partial(publish_event, runtime.broker), settings.TRACKING_SHUTDOWN_FLUSH_SECONDS
            )
        else:
            _events(runtime).abandon()

    app = create_service(
        "tracking",
        settings,
        title="Mailer tracking",
        api=[api.router],
        tracer_provider=tracer_provider,
        background=[_publish_events],
        on_shutdown=flush_events,
    )
    # The buffer's metrics go to the registry the service frame made (served at /metrics).
    runtime: Runtime = app.state.runtime
    runtime.state["tracker"] = api.Tracker(
        signer=LinkSigner(settings.TRACKING_SIGNING_KEYS),
        events=EventBuffer(
            capacity=settings.TRACKING_BUFFER_SIZE,
            batch_size=settings.TRACKING_BATCH_SIZE,
            put_wait=settings.TRACKING_BUFFER_WAIT_SECONDS,
            registry=runtime.registry,
        ),
        bursts=ClickBursts(),
    )
    return app
