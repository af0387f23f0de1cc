"""Composition root of the bounce service."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from services.bounce import api as bounce_api
from services.bounce import brake_api, brake_handlers, handlers, sqs
from services.bounce.brake_loop import BrakeConfig, BrakeLoop
from services.bounce.cloudwatch import CloudWatchRates
from services.bounce.ses_suppression import SesSuppressionMirror, SuppressionMirror
from services.bounce.settings import BounceSettings
from shared.contracts import utc_now
from shared.crypto import SecretBox
from shared.service import Runtime, create_service


async def _run_brake(runtime: Runtime) -> None:
    await brake_api.brake_of(runtime).run()


def create_app(
    settings: BounceSettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    clock: Callable[[], datetime] = utc_now,
    sns_http: httpx.AsyncClient | None = None,
    ses_mirror: SuppressionMirror | None = None,
) -> FastAPI:
    """Build the bounce service (connections open in its lifespan, not here); `clock` is the
    reputation brake's (tests move it past a pause)."""
    settings = settings or BounceSettings()
    app = create_service(
        "bounce",
        settings,
        title="Mailer bounce",
        routers=[handlers.router, brake_handlers.router],
        api=[brake_api.router, bounce_api.router],
        tracer_provider=tracer_provider,
        background=[_run_brake, sqs.poll_queues],
    )
    runtime: Runtime = app.state.runtime
    # Certificates and confirmations go to SNS hosts only; tests pass a client that trusts their
    # local certificate authority.
    runtime.state.update(bounce_api.sns_state(settings, sns_http or httpx.AsyncClient(timeout=10)))
    # None: suppressions stay ours only (tests pass a recording mirror).
    if ses_mirror is None and settings.SES_SUPPRESSION_MIRROR:
        ses_mirror = SesSuppressionMirror(SecretBox(settings.SECRET_KEYS))
    runtime.state["ses_mirror"] = ses_mirror
    # Built here rather than in the task: its gauges go on the registry the frame made.
    runtime.state["brake"] = BrakeLoop(
        runtime,
        BrakeConfig(
            poll_seconds=settings.REPUTATION_POLL_SECONDS,
            min_sends=settings.REPUTATION_MIN_SENDS,
            history=timedelta(days=settings.REPUTATION_HISTORY_DAYS),
            window=timedelta(hours=settings.REPUTATION_WINDOW_HOURS),
        ),
        CloudWatchRates(
            SecretBox(settings.SECRET_KEYS), timedelta(hours=settings.REPUTATION_CLOUDWATCH_LOOKBACK_HOURS)
        ),
        clock,
    )
    return app
