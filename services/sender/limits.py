"""How fast and how much an account may send: its rate, its 24-hour quota, its warm-up ramp, and
what its provider says about both.

Waiting is the only answer: a pace never fails a message. When the account must wait for room in
its 24-hour window or for a throttle to pass, the wait is announced once (`on_hold`) so the
account shows as waiting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time

from services.sender.throttle import TokenBucket
from shared.contracts import AccountConfigured, Warmup, utc_now

log = logging.getLogger(__name__)

OnHold = Callable[[str, datetime], Awaitable[None]]

_WINDOW = timedelta(hours=24)
_MINUTE = timedelta(minutes=1)
# SES's advice after a throttle: retry after 5, 10, 30 seconds, then 20 minutes.
_BACKOFF_SECONDS = (5.0, 10.0, 30.0, 1200.0)
# Holds last between the step and 25 % more, never less than SES advises.
_JITTER = 0.25
# SES says to wait "up to 10 minutes" on a throttle; a full 24-hour quota frees slowly, so an hour.
_DAILY_QUOTA_HOLD_SECONDS = 3600.0
# Multiplicative decrease on a throttle, down to an eighth of the rate; then each send gives back
# 1/500 of it, so a halved rate comes back after 250 sends without a throttle.
_RATE_CUT = 0.5
_RATE_FLOOR = 1 / 8
_RATE_RECOVERY_PER_SEND = 1 / 500
# SES counts arrivals per second at its end; network jitter bunches our evenly spaced sends, so
# staying 10 % under its maximum rate keeps a bunched second under it.
_PROVIDER_RATE_SHARE = 0.9
# A slot acquired but neither recorded nor released (a cancelled or abandoned send) stops holding
# room in the window after this long, longer than any send takes.
_RESERVATION_SECONDS = 120.0
# Other systems' sends, as the provider counted them, hold room for this long after it said so;
# we cannot see when they leave its window, and its "daily quota exceeded" tells us if still there.
_FOREIGN_SENDS_TRUST = timedelta(hours=1)
# A wait for room looks again at least this often (limits may have been raised meanwhile) ...
_RECHECK_SECONDS = 60.0
# ... and this often when only sends in flight fill the room (they end within a send's time).
_IN_FLIGHT_RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class ProviderLimits:
    """What the provider allows the account (SES GetSendQuota); None: no such limit."""

    max_send_rate: float | None
    max_24_hour_send: int | None
    sent_last_24_hours: int


def warmup_limit(warmup: Warmup, today: date) -> int | None:
    """Messages allowed in 24 hours on `today` by the ramp; None once the ramp is beyond counting."""
    days = max(0, (today - warmup.started_on).days)
    try:
        return math.floor(warmup.start_per_day * warmup.growth_per_day**days)
    except OverflowError:
        return None


@dataclass
class _Minute:
    start: datetime
    count: int


class SentWindow:
    """The account's sends of the last 24 hours, counted per minute (at most 1,441 counters).

    A minute counts until a whole day has passed since its end, so the window never holds fewer
    sends than the provider's exact one.
    """

    def __init__(self, history: Iterable[tuple[datetime, int]] = ()) -> None:
        self._minutes: deque[_Minute] = deque()
        self.total = 0
        for at, count in sorted(history):
            self.add(at, count)

    def add(self, at: datetime, count: int = 1) -> None:
        """Count `count` sends at `at`."""
        start = at.replace(second=0, microsecond=0)
        self.total += count
        if not self._minutes or self._minutes[-1].start < start:
            self._minutes.append(_Minute(start, count))
            return
        # A send recorded late (sends in flight end out of order): find or insert its minute.
        for index in range(len(self._minutes) - 1, -1, -1):
            minute = self._minutes[index]
            if minute.start == start:
                minute.count += count
                return
            if minute.start < start:
                self._minutes.insert(index + 1, _Minute(start, count))
                return
        self._minutes.appendleft(_Minute(start, count))

    def expire(self, now: datetime) -> None:
        """Forget the minutes that left the window."""
        while self._minutes and self._minutes[0].start + _WINDOW + _MINUTE <= now:
            self.total -= self._minutes.popleft().count

    def frees(self, count: int) -> datetime | None:
        """When `count` of the sends in the window will have left it; None if it holds fewer."""
        freed = 0
        for minute in self._minutes:
            freed += minute.count
            if freed >= count:
                return minute.start + _WINDOW + _MINUTE
        return None


@dataclass(frozen=True)
class _DailyLimit:
    reason: str
    allowed: int
    grows_at: datetime | None  # when it may allow more without any send leaving the window


@dataclass(frozen=True)
class _Wait:
    reason: str | None  # None: a short wait for sends in flight, not a hold to announce
    seconds: float
    until: datetime


class SendingPace:
    """One account's pace: its rate slots, its 24-hour window, throttle holds and their backoff.

    Several sends of the account may wait in `acquire()` at once; each gets its own slot, spaced
    exactly 1/rate apart, and none goes while the account is held.
    """

    def __init__(
        self,
        config: AccountConfigured,
        sent_history: Iterable[tuple[datetime, int]] = (),
        *,
        on_hold: OnHold | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._config = config
        self._on_hold = on_hold
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._jitter = jitter
        self._window = SentWindow(sent_history)
        self._provider: ProviderLimits | None = None
        # Sends the provider counted in its 24 hours that are not in our window (another system
        # using the same account), and when it said so.
        self._foreign_sends = 0
        self._provider_read_at = wall_clock()
        self._share = 1.0
        self._bucket = TokenBucket(self._ceiling(), clock=clock)
        self._reservations: deque[float] = deque()
        self._hold_until = -math.inf
        self._hold = _Wait("throttled", 0.0, self._provider_read_at)
        self._throttles_in_a_row = 0
        self._announced: tuple[str, datetime] | None = None
        self._changed = asyncio.Event()

    @property
    def rate(self) -> float:
        """The sends per second allowed now (lowered by throttles, recovering with sends)."""
        return self._bucket.rate

    async def acquire(self) -> None:
        """Wait until the account may send one message: a rate slot, room in its 24-hour window,
        and no throttle hold."""
        while True:
            wait = self._obstacle()
            if wait is not None:
                await self._wait(wait)
                continue
            self._reservations.append(self._clock() + _RESERVATION_SECONDS)
            delay = self._bucket.reserve()
            try:
                if delay > 0:
                    await self._sleep(delay)
            except BaseException:
                self._drop_reservation()
                raise
            if self._clock() < self._hold_until:
                # A throttle arrived while this slot was awaited: wait for the hold like the others.
                self._drop_reservation()
                continue
            self._announced = None
            return

    def try_acquire(self) -> bool:
        """Take a send slot if one is free now (as `acquire` would without waiting); False, with
        nothing taken, if the account must wait for it."""
        if self._obstacle() is not None or not self._bucket.try_reserve():
            return False
        self._reservations.append(self._clock() + _RESERVATION_SECONDS)
        self._announced = None
        return True

    def held(self) -> bool:
        """Whether a throttle hold is in force now (sends wait for it in `acquire`)."""
        return self._clock() < self._hold_until

    def record_sent(self, at: datetime | None = None) -> None:
        """A message acquired before was sent: count it, and win back some rate."""
        self._window.add(at or self._wall_clock())
        self._drop_reservation()
        self._throttles_in_a_row = 0
        if self._share < 1.0:
            self._share = min(1.0, self._share + _RATE_RECOVERY_PER_SEND)
            self._bucket.set_rate(self._ceiling() * self._share)

    def release(self) -> None:
        """A message acquired before was not sent (refused, failed): its room in the window is free."""
        self._drop_reservation()
        self._notify()

    def throttled(self, daily_quota_exceeded: bool = False) -> None:
        """The provider refused for the account's pace: hold the account and slow it down.

        Throttles reported while a hold lasts come from sends that were already in flight: they
        neither lengthen the hold nor cut the rate again.
        """
        now, wall = self._clock(), self._wall_clock()
        if now < self._hold_until:
            return
        if daily_quota_exceeded:
            self._window.expire(wall)
            oldest_leaves = self._window.frees(1)
            seconds = _DAILY_QUOTA_HOLD_SECONDS
            if oldest_leaves is not None:
                seconds = min(seconds, max(_BACKOFF_SECONDS[0], (oldest_leaves - wall).total_seconds()))
            reason = "quota"
        else:
            step = _BACKOFF_SECONDS[min(self._throttles_in_a_row, len(_BACKOFF_SECONDS) - 1)]
            seconds = step * (1 + _JITTER * self._jitter())
            self._throttles_in_a_row += 1
            self._share = max(_RATE_FLOOR, self._share * _RATE_CUT)
            self._bucket.set_rate(self._ceiling() * self._share)
            reason = "throttled"
        self._hold_until = now + seconds
        self._hold = _Wait(reason, seconds, wall + timedelta(seconds=seconds))

    def apply_provider_limits(self, limits: ProviderLimits) -> None:
        """Honour the provider's rate and 24-hour quota (if the account is configured to)."""
        if not self._config.use_provider_limits:
            return
        wall = self._wall_clock()
        self._window.expire(wall)
        self._provider = limits
        self._foreign_sends = max(0, limits.sent_last_24_hours - self._window.total)
        self._provider_read_at = wall
        self._bucket.set_rate(self._ceiling() * self._share)
        self._notify()

    def _ceiling(self) -> float:
        rate = self._config.rate_per_second
        if self._provider is not None and self._provider.max_send_rate:
            rate = min(rate, self._provider.max_send_rate * _PROVIDER_RATE_SHARE)
        return rate

    def _daily_limit(self, wall: datetime) -> _DailyLimit | None:
        """The lowest 24-hour limit in force; a tie counts as the quota."""
        limits: list[_DailyLimit] = []
        if self._config.daily_quota is not None:
            limits.append(_DailyLimit("quota", self._config.daily_quota, None))
        if self._provider is not None and self._provider.max_24_hour_send is not None:
            trusted_until = self._provider_read_at + _FOREIGN_SENDS_TRUST
            if self._foreign_sends and wall < trusted_until:
                limits.append(
                    _DailyLimit("quota", self._provider.max_24_hour_send - self._foreign_sends, trusted_until)
                )
            else:
                limits.append(_DailyLimit("quota", self._provider.max_24_hour_send, None))
        if self._config.warmup is not None:
            ramp = warmup_limit(self._config.warmup, wall.date())
            if ramp is not None:
                # The ramp grows at midnight (UTC), which may make room before any minute leaves.
                midnight = datetime.combine(wall.date() + timedelta(days=1), day_time(), UTC)
                limits.append(_DailyLimit("warmup", ramp, midnight))
        return min(limits, key=lambda limit: limit.allowed, default=None)

    def _obstacle(self) -> _Wait | None:
        """What the next send must wait for, if anything."""
        now = self._clock()
        if now < self._hold_until:
            return self._hold
        while self._reservations and self._reservations[0] <= now:
            self._reservations.popleft()
        wall = self._wall_clock()
        self._window.expire(wall)
        limit = self._daily_limit(wall)
        if limit is None or self._window.total + len(self._reservations) < limit.allowed:
            return None
        if self._window.total < limit.allowed:
            return _Wait(None, _IN_FLIGHT_RECHECK_SECONDS, wall)
        frees = self._window.frees(self._window.total - limit.allowed + 1)
        moments = [moment for moment in (frees, limit.grows_at) if moment is not None]
        # Neither: the provider allows nothing at all; its next reading (which wakes us) may change that.
        until = min(moments, default=self._provider_read_at + _WINDOW)
        # At least a short wait, so that a moment already past can never make a busy loop.
        return _Wait(limit.reason, max(_IN_FLIGHT_RECHECK_SECONDS, (until - wall).total_seconds()), until)

    async def _wait(self, wait: _Wait) -> None:
        if wait.reason is not None:
            await self._announce(wait.reason, wait.until)
        if wait is self._hold:
            await self._sleep(max(0.0, self._hold_until - self._clock()))
        else:
            await self._sleep_or_change(min(wait.seconds, _RECHECK_SECONDS))

    async def _announce(self, reason: str, until: datetime) -> None:
        """Tell `on_hold` once per hold, however many sends wait for it."""
        if self._on_hold is None or self._announced == (reason, until):
            return
        self._announced = (reason, until)
        try:
            await self._on_hold(reason, until)
        except Exception:
            # Only the account's visibility is lost; the hold itself is honoured all the same.
            log.exception("announcing an account hold failed")

    async def _sleep_or_change(self, seconds: float) -> None:
        """Sleep, or less if the limits or the sends in flight change meanwhile."""
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _drop_reservation(self) -> None:
        if self._reservations:
            self._reservations.popleft()
