"""Composition root of the tracking service."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from services.tracking import api, files
from services.tracking.event_buffer import EventBuffer
from services.tracking.machines import ClickBursts
from services.tracking.publisher import Bundled, ConfirmedPublisher
from services.tracking.settings import TrackingSettings
from shared.links import LinkSigner
from shared.service import Runtime, create_service

log = logging.getLogger(__name__)

# While the broker is away at start, try to connect the publisher again this often.
_CONNECT_RETRY_SECONDS = 1.0


def _tracker(runtime: Runtime) -> api.Tracker:
    tracker: api.Tracker = runtime.state["tracker"]
    return tracker


def _publisher(runtime: Runtime) -> ConfirmedPublisher:
    publisher: ConfirmedPublisher = runtime.state["publisher"]
    return publisher


async def _publish_events(runtime: Runtime) -> None:
    await runtime.broker_started.wait()  # the events exchange is declared by then
    while True:
        try:
            await _publisher(runtime).connect()
            break
        except Exception:
            log.warning("event publisher cannot connect; retrying", exc_info=True)
            await asyncio.sleep(_CONNECT_RETRY_SECONDS)
    await _tracker(runtime).events.run(Bundled(_publisher(runtime)))


def create_app(
    settings: TrackingSettings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build the tracking service (connections open in its lifespan, not here)."""
    settings = settings or TrackingSettings()

    async def flush_events(runtime: Runtime) -> None:
        # Runs after the publishing loop was cancelled and before the broker stops.
        events = _tracker(runtime).events
        if runtime.broker_started.is_set():
            await events.drain(Bundled(_publisher(runtime)), settings.TRACKING_SHUTDOWN_FLUSH_SECONDS)
        else:
            events.abandon()
        await _publisher(runtime).close()

    app = create_service(
        "tracking",
        settings,
        title="Mailer tracking",
        api=[api.router, files.router],
        tracer_provider=tracer_provider,
        background=[_publish_events],
        on_shutdown=flush_events,
    )
    # The buffer's metrics go to the registry the service frame made (served at /metrics).
    runtime: Runtime = app.state.runtime
    tracker = api.Tracker(
        signer=LinkSigner(settings.TRACKING_SIGNING_KEYS),
        events=EventBuffer(
            capacity=settings.TRACKING_BUFFER_SIZE,
            batch_size=settings.TRACKING_BATCH_SIZE,
            put_wait=settings.TRACKING_BUFFER_WAIT_SECONDS,
            linger=settings.TRACKING_BATCH_LINGER_SECONDS,
            registry=runtime.registry,
        ),
        bursts=ClickBursts(),
    )
    runtime.state["tracker"] = tracker
    runtime.state["publisher"] = ConfirmedPublisher(settings.RABBITMQ_URL)
    # The service frame builds a plain FastAPI; the pixel and the redirect go in front of it.
    app.__class__ = api.TrackingApp
    assert isinstance(app, api.TrackingApp)  # for the type checker
    app.hot_paths = api.HotPaths(partial(FastAPI.__call__, app), tracker)
    return app
