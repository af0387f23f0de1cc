"""The service frame: probes, metrics, error mapping, and starting while dependencies are away."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from shared.errors import Conflict, NotFound
from shared.service import create_service
from shared.settings import ServiceSettings
from tests.support import running

pytestmark = pytest.mark.connected


def _failing_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/missing")
    async def missing() -> None:
        raise NotFound("thing 7 not found")

    @router.get("/clash")
    async def clash() -> None:
        raise Conflict("cannot start a campaign that is completed")

    return router


class TestProbes:
    async def test_ready_with_metrics_when_broker_and_database_answer(
        self, make_settings: Callable[..., Any]
    ) -> None:
        app = create_service("bounce", make_settings(ServiceSettings, SERVICE_NAME="bounce"), title="t")
        async with running(app) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"broker": True, "database": True})
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert "faststream_received_messages_total" in metrics.text

    async def test_starts_and_reports_not_ready_while_dependencies_are_away(
        self, make_settings: Callable[..., Any]
    ) -> None:
        settings = make_settings(
            ServiceSettings,
            DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
            RABBITMQ_URL="amqp://guest:guest@127.0.0.1:1/",
        )
        app = create_service("bounce", settings, title="t")
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
        ):
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()) == (503, {"broker": False, "database": False})


class TestErrors:
    async def test_domain_errors_become_404_and_409(self, make_settings: Callable[..., Any]) -> None:
        app = create_service("bounce", make_settings(ServiceSettings), title="t", api=[_failing_routes()])
        async with running(app) as client:
            missing = await client.get("/missing")
            assert (missing.status_code, missing.json()) == (404, {"detail": "thing 7 not found"})
            clash = await client.get("/clash")
            assert (clash.status_code, clash.json()["detail"]) == (
                409,
                "cannot start a campaign that is completed",
            )
