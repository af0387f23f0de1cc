"""Helpers shared by tests: run a service in-process, wait for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import httpx
from fastapi import FastAPI

from shared.service import Runtime

T = TypeVar("T")


@asynccontextmanager
async def running(app: FastAPI, start_within: float = 30.0) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan until its broker has started; yield an HTTP client bound to it."""
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        await asyncio.wait_for(runtime.broker_started.wait(), start_within)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            yield client


async def eventually(check: Callable[[], Awaitable[T]], within: float = 20.0, interval: float = 0.1) -> T:
    """Call `check` until it returns a truthy value or raises no AssertionError; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            result = await check()
            if result:
                return result
            failure: Exception = AssertionError(f"condition still false: {result!r}")
        except AssertionError as exc:
            failure = exc
        if time.monotonic() > deadline:
            raise failure
        await asyncio.sleep(interval)
