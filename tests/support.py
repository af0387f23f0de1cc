"""Helpers shared by tests: run a service in-process, wait for a condition."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from faststream import BaseMiddleware
from faststream.message import StreamMessage

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


def until(check: Callable[[], T], timeout: float) -> T:
    """Call `check` (blocking) until it returns something truthy or `timeout` seconds pass; its
    last result either way (for tests that drive real processes synchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


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


def unique_id() -> int:
    """An id no other test of this run uses (the database is shared by the run; fits integer)."""
    return random.randint(10**8, 2**31 - 1)


@dataclass
class Handled:
    """Message ids the service's handlers finished with: None for success, else the error."""

    outcomes: dict[str, list[str | None]] = field(default_factory=dict)

    def middleware(self) -> type[BaseMiddleware]:
        """A broker middleware (innermost, so it sees the handler's own error) that records."""
        handled = self

        class Record(BaseMiddleware):
            async def consume_scope(
                self, call_next: Callable[[StreamMessage[Any]], Any], msg: StreamMessage[Any]
            ) -> Any:
                try:
                    result = await call_next(msg)
                except Exception as exc:
                    handled.outcomes.setdefault(msg.message_id, []).append(repr(exc))
                    raise
                handled.outcomes.setdefault(msg.message_id, []).append(None)
                return result

        return Record

    async def wait_for(self, message_id: str, times: int = 1, within: float = 20.0) -> list[str | None]:
        """The outcomes of a message once it was handled `times` times."""

        async def done() -> bool:
            return len(self.outcomes.get(message_id, [])) >= times

        await eventually(done, within)
        return self.outcomes[message_id]
