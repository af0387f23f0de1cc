"""The per-account rate limit: a token bucket that hands out reservations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` sends per second with bursts of at most `burst`.

    Each call reserves the next send slot and says how long to wait for it; slots are spaced
    exactly 1/rate apart once the burst is spent, whatever the caller's own delays. Kept as the
    theoretical time of the next slot (GCRA) rather than a token count, so that a rate change
    spaces the next slot from the last one handed out, never before it.
    """

    def __init__(self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._check(rate)
        self._interval = 1 / rate
        self._burst = burst
        self._clock = clock
        self._next = clock()

    @staticmethod
    def _check(rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive and burst at least 1")

    @property
    def rate(self) -> float:
        """Sends per second."""
        return 1 / self._interval

    def set_rate(self, rate: float) -> None:
        """Change the rate; the next slot comes 1/rate after the last one reserved."""
        self._check(rate)
        interval = 1 / rate
        self._next += interval - self._interval
        self._interval = interval

    def reserve(self) -> float:
        """Take the next slot; return the seconds to wait before using it (0 if now)."""
        now = self._clock()
        slot = max(now, self._next - (self._burst - 1) * self._interval)
        self._next = max(self._next, slot) + self._interval
        return slot - now

    def try_reserve(self) -> bool:
        """Take the next slot if it is now; False (nothing taken) if it would need a wait."""
        now = self._clock()
        if self._next - (self._burst - 1) * self._interval > now:
            return False
        self._next = max(self._next, now) + self._interval
        return True

    async def acquire(self) -> None:
        """Wait for the next slot."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
