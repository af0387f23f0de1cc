"""A background loop that does work in steps: when nudged, and every `interval` seconds anyway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Pump:
    """Calls `step` until it reports nothing left (False), after each nudge or tick.

    The tick catches up with work whose nudge was lost (a crash, another replica's commit);
    errors (database or broker away) are logged and the next tick tries again.
    """

    def __init__(self, step: Callable[[], Awaitable[bool]], name: str, interval: float = 1.0) -> None:
        self._step = step
        self._name = name
        self._interval = interval
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """There is new work: do it now rather than at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        """Loop until cancelled."""
        while True:
            # asyncio.timeout rather than wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and the loop would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while await self._step():
                    pass
            except Exception:
                log.warning("%s failed; will retry", self._name, exc_info=True)
