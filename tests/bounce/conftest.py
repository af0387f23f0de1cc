"""Fixtures of the bounce tests: the service running in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from services.bounce.app import create_app
from services.bounce.settings import BounceSettings
from tests.bounce.support import Bounce
from tests.support import Handled, running


@pytest.fixture(scope="module")
async def bounce(make_settings: Callable[..., Any]) -> AsyncIterator[Bounce]:
    """The bounce service, one per test module."""
    app = create_app(make_settings(BounceSettings))
    handled = Handled()
    app.state.runtime.broker.add_middleware(handled.middleware())
    async with running(app):
        yield Bounce(app, handled)


@pytest.fixture
async def bounce_conn(conn: asyncpg.Connection) -> asyncpg.Connection:
    """The test's rolled-back connection, seeing the bounce schema as the service's pool does."""
    await conn.execute("SET LOCAL search_path TO bounce")
    return conn
