"""The frame every service runs in: a FastAPI app owning the pool, the broker and the outbox relay.

`create_service` builds nothing that connects: the lifespan does, and it tolerates PostgreSQL or
RabbitMQ being away at start (the service reports not-ready and keeps trying instead of
crash-looping). Each service gets `/healthz` (the process is alive), `/readyz` (broker and
database reachable), `/metrics` (Prometheus), JSON logs and tracing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from faststream import Context
from faststream.rabbit import RabbitBroker, RabbitRouter
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared import db
from shared.broker import declare_topology, make_broker
from shared.errors import Conflict, NotFound
from shared.logs import configure_logging
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.telemetry import instrument, make_tracer_provider

log = logging.getLogger(__name__)

_RECONNECT_MAX_DELAY = 30.0
_PROBE_TIMEOUT = 2.0


@dataclass
class Runtime:
    """What a running service holds; handlers get it from the broker context, routes from `RuntimeDep`."""

    name: str
    settings: ServiceSettings
    broker: RabbitBroker
    registry: CollectorRegistry
    tracer_provider: TracerProvider
    pool: asyncpg.Pool = field(init=False)
    relay: OutboxRelay = field(init=False)
    broker_started: asyncio.Event = field(default_factory=asyncio.Event)
    state: dict[str, Any] = field(default_factory=dict)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a transaction; after commit, the outbox relay publishes what it queued."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn
        self.relay.notify()


Hook = Callable[[Runtime], Awaitable[None]]
BackgroundTask = Callable[[Runtime], Coroutine[Any, Any, None]]
"""A coroutine function run as a task for the life of the service (`asyncio.create_task` needs a coroutine)."""


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
"""The service runtime in a FastAPI route."""

HandlerRuntime = Annotated[Runtime, Context("runtime")]
"""The service runtime in a FastStream handler."""


async def _start_broker(runtime: Runtime, on_started: Hook | None) -> None:
    delay = 1.0
    while True:
        try:
            await runtime.broker.connect()
            await declare_topology(runtime.broker)
            await runtime.broker.start()
            break
        except Exception:
            log.warning("broker not reachable; retrying", extra={"delay_s": delay}, exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_DELAY)
    runtime.broker_started.set()
    log.info("broker started")
    if on_started is not None:
        await on_started(runtime)


async def _database_ok(pool: asyncpg.Pool) -> bool:
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        return True
    except Exception:
        return False


def _probes(runtime: Runtime) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(runtime.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        broker_ok = runtime.broker_started.is_set() and await runtime.broker.ping(timeout=_PROBE_TIMEOUT)
        checks = {"broker": broker_ok, "database": await _database_ok(runtime.pool)}
        return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)

    return router


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc) or "not found"}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("dependency unavailable", exc_info=exc)
        return JSONResponse({"detail": "service temporarily unavailable, try again"}, status_code=503)

    for exc_type in (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError, TimeoutError):
        app.add_exception_handler(exc_type, unavailable)


def create_service(
    name: str,
    settings: ServiceSettings,
    *,
    title: str,
    routers: Sequence[RabbitRouter] = (),
    api: Sequence[APIRouter] = (),
    tracer_provider: TracerProvider | None = None,
    on_broker_started: Hook | None = None,
    on_shutdown: Hook | None = None,
    background: Sequence[BackgroundTask] = (),
    state: dict[str, Any] | None = None,
) -> FastAPI:
    """Build a service app named `name` (also its database schema) from its parts."""
    configure_logging(name, settings.LOG_LEVEL, settings.LOG_FORMAT)
    provider = tracer_provider or make_tracer_provider(name, settings.OTEL_EXPORTER_OTLP_ENDPOINT)
    registry = CollectorRegistry()
    broker = make_broker(settings, tracer_provider=provider, registry=registry)
    for router in routers:
        broker.include_router(router)
    runtime = Runtime(name, settings, broker, registry, provider, state=dict(state or {}))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.pool = await db.create_pool(settings.DATABASE_URL, name, settings.DATABASE_POOL_SIZE)
        runtime.relay = OutboxRelay(runtime.pool, broker, lock_key=f"{name}.outbox")
        broker.context.set_global("runtime", runtime)
        tasks = [
            asyncio.create_task(_start_broker(runtime, on_broker_started), name=f"{name}-broker"),
            asyncio.create_task(runtime.relay.run(), name=f"{name}-outbox"),
            *(asyncio.create_task(task(runtime), name=f"{name}-background") for task in background),
        ]
        # What was built by now (modules, the app, its models: ~120,000 objects) lives as long as
        # the process: kept out of the collector's way, each full collection stops walking them,
        # which took ~80 ms a time, a pause every request then in progress waited through.
        gc.freeze()
        try:
            yield
        finally:
            # Background work first (it may be starting consumers), then the service's own
            # resources, then the broker: a shutdown half-way through a start must still finish.
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if on_shutdown is not None:
                await on_shutdown(runtime)
            try:
                await broker.stop()
            except Exception:
                log.warning("broker did not stop cleanly", exc_info=True)
            await runtime.pool.close()

    app = FastAPI(title=title, lifespan=lifespan, version="1")
    app.state.runtime = runtime
    app.include_router(_probes(runtime))
    for api_router in api:
        app.include_router(api_router)
    _error_handlers(app)
    instrument(app, provider)
    return app
