"""An account's pace on a virtual clock: time moves only when every waiter sleeps, and then jumps
to the earliest wake-up, so waits of hours take no real time and every instant is exact."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest

from services.sender.limits import ProviderLimits, SendingPace, SentWindow, warmup_limit
from shared.contracts import AccountConfigured, SmtpConnection, Warmup

T = TypeVar("T")
START = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)


class VirtualTime:
    """A monotonic and a wall clock moving together, and a sleep that waits for them."""

    def __init__(self, wall: datetime = START) -> None:
        self.now = 1000.0
        self._wall_at_start = wall
        self._start = self.now
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return self._wall_at_start + timedelta(seconds=self.now - self._start)

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    async def settle(self) -> None:
        """Let every task run until it sleeps or waits."""
        for _ in range(20):
            await asyncio.sleep(0)

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable`, jumping the clocks to each next wake-up whenever all are asleep."""
        task = asyncio.ensure_future(awaitable)
        while True:
            await self.settle()
            if task.done():
                return task.result()
            self._sleepers = [(wake, f) for wake, f in self._sleepers if not f.done()]
            assert self._sleepers, "nothing sleeps, nothing runs: a waiter waits for ever"
            wake = min(wake for wake, _ in self._sleepers)
            self.now = max(self.now, wake)
            for when, future in self._sleepers:
                if when <= self.now:
                    future.set_result(None)


class Holds:
    """An on_hold callback noting each announcement."""

    def __init__(self) -> None:
        self.announced: list[tuple[str, datetime]] = []

    async def __call__(self, reason: str, until: datetime) -> None:
        self.announced.append((reason, until))


def an_account(**overrides: Any) -> AccountConfigured:
    values: dict[str, Any] = {
        "account_id": 7,
        "name": "conta",
        "transport": "smtp",
        "smtp": SmtpConnection(host="127.0.0.1", port=25, security="none"),
        "rate_per_second": 10.0,
        "active": True,
    }
    return AccountConfigured(**(values | overrides))


def a_pace(
    time: VirtualTime,
    holds: Holds | None = None,
    history: list[tuple[datetime, int]] | None = None,
    jitter: float = 0.0,
    **account: Any,
) -> SendingPace:
    return SendingPace(
        an_account(**account),
        history or [],
        on_hold=holds,
        clock=time.monotonic,
        wall_clock=time.wall,
        sleep=time.sleep,
        jitter=lambda: jitter,
    )


async def acquire_times(time: VirtualTime, pace: SendingPace, count: int) -> list[float]:
    """When each of `count` concurrent acquire() calls returned."""

    async def one() -> float:
        await pace.acquire()
        return time.now

    return sorted(await time.run(asyncio.gather(*(one() for _ in range(count)))))


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


class TestRate:
    @pytest.mark.parametrize("rate", [10.0, 0.5])
    async def test_one_after_another_slots_are_exactly_one_over_rate_apart(self, rate: float) -> None:
        time = VirtualTime()
        pace = a_pace(time, rate_per_second=rate)
        started = time.now

        times = []
        for _ in range(5):
            await time.run(pace.acquire())
            times.append(time.now)

        assert times[0] == started
        assert gaps(times) == pytest.approx([1 / rate] * 4)

    @pytest.mark.parametrize("rate", [10.0, 0.5])
    async def test_concurrent_callers_get_no_burst_and_exact_spacing(self, rate: float) -> None:
        time = VirtualTime()
        pace = a_pace(time, rate_per_second=rate)

        times = await acquire_times(time, pace, 8)

        assert gaps(times) == pytest.approx([1 / rate] * 7)

    async def test_a_caller_slower_than_the_rate_never_waits(self) -> None:
        time = VirtualTime()
        pace = a_pace(time, rate_per_second=10.0)

        for _ in range(3):
            before = time.now
            await time.run(pace.acquire())
            assert time.now == before
            time.now += 0.5


class TestQuotaWindow:
    async def test_waits_until_the_oldest_minute_leaves_the_window(self) -> None:
        time, holds = VirtualTime(), Holds()
        oldest = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)  # 23 hours before START
        history = [(oldest + timedelta(seconds=42), 2), (START - timedelta(hours=1), 1)]
        pace = a_pace(time, holds, history, daily_quota=3)

        await time.run(pace.acquire())

        frees_at = oldest + timedelta(hours=24, minutes=1)
        assert time.wall() == frees_at
        assert holds.announced == [("quota", frees_at)]

    async def test_history_older_than_the_window_does_not_count(self) -> None:
        time, holds = VirtualTime(), Holds()
        history = [(START - timedelta(hours=24, minutes=2), 50), (START - timedelta(hours=2), 2)]
        pace = a_pace(time, holds, history, daily_quota=3)

        await time.run(pace.acquire())

        assert time.wall() == START
        assert holds.announced == []

    async def test_sends_recorded_fill_the_window(self) -> None:
        time, holds = VirtualTime(), Holds()
        pace = a_pace(time, holds, daily_quota=2)
        for _ in range(2):
            await time.run(pace.acquire())
            pace.record_sent()

        await time.run(pace.acquire())

        frees_at = START.replace(second=0) + timedelta(hours=24, minutes=1)
        assert time.wall() == frees_at
        assert holds.announced == [("quota", frees_at)]

    async def test_sends_in_flight_hold_their_room_until_recorded_or_released(self) -> None:
        time, holds = VirtualTime(), Holds()
        pace = a_pace(time, holds, daily_quota=2)
        for _ in range(2):
            await time.run(pace.acquire())

        third = asyncio.ensure_future(pace.acquire())
        await time.settle()
        assert not third.done()

        pace.release()
        await time.run(third)
        assert time.now == pytest.approx(1000.2)  # its rate slot, not a wait for the window
        assert holds.announced == []

    async def test_a_slot_never_recorded_nor_released_stops_holding_room(self) -> None:
        time, holds = VirtualTime(), Holds()
        pace = a_pace(time, holds, daily_quota=1)
        await time.run(pace.acquire())
        started = time.now

        await time.run(pace.acquire())

        assert time.now - started == pytest.approx(120.0, abs=1.0)
        assert holds.announced == []

    async def test_a_cancelled_acquire_gives_its_room_back(self) -> None:
        time = VirtualTime()
        pace = a_pace(time, daily_quota=1, rate_per_second=0.5)
        await time.run(pace.acquire())
        pace.release()
        waiting = asyncio.ensure_future(pace.acquire())  # sleeps 2 s for its slot
        await time.settle()

        waiting.cancel()
        await time.settle()

        before = time.now
        await time.run(pace.acquire())
        assert time.now - before == pytest.approx(4.0)  # the next free slot, not a window wait


class TestWarmup:
    @pytest.mark.parametrize(
        ("today", "limit"),
        [
            (date(2026, 11, 20), 10),  # before the ramp starts: its first day's limit
            (date(2026, 11, 21), 10),
            (date(2026, 11, 22), 15),
            (date(2026, 11, 24), 33),  # 10 * 1.5**3 = 33.75, whole messages only
            (date(2026, 12, 21), math.floor(10 * 1.5**30)),
        ],
    )
    def test_the_limit_grows_by_the_factor_each_day(self, today: date, limit: int) -> None:
        warmup = Warmup(started_on=date(2026, 11, 21), start_per_day=10, growth_per_day=1.5)

        assert warmup_limit(warmup, today) == limit

    def test_a_ramp_beyond_counting_limits_nothing(self) -> None:
        warmup = Warmup(started_on=date(2000, 1, 1), start_per_day=10, growth_per_day=3)

        assert warmup_limit(warmup, date(2026, 11, 23)) is None

    async def test_waits_for_midnight_when_tomorrows_ramp_makes_room(self) -> None:
        time, holds = VirtualTime(), Holds()
        warmup = Warmup(started_on=START.date(), start_per_day=2, growth_per_day=1.5)
        pace = a_pace(time, holds, warmup=warmup)
        for _ in range(2):
            await time.run(pace.acquire())
            pace.record_sent()

        await time.run(pace.acquire())

        midnight = datetime(2026, 11, 24, tzinfo=UTC)
        assert time.wall() == midnight
        assert holds.announced == [("warmup", midnight)]

    @pytest.mark.parametrize(("daily_quota", "reason"), [(5, "warmup"), (2, "quota"), (3, "quota")])
    async def test_the_lowest_limit_names_the_wait(self, daily_quota: int, reason: str) -> None:
        time, holds = VirtualTime(), Holds()
        warmup = Warmup(started_on=START.date(), start_per_day=3)
        history = [(START - timedelta(hours=1), 10)]
        pace = a_pace(time, holds, history, warmup=warmup, daily_quota=daily_quota)

        await time.run(pace.acquire())

        # A hold at midnight may be followed by another once the grown ramp is full again.
        assert {announced for announced, _ in holds.announced} == {reason}


class TestThrottled:
    async def wait_after_throttle(self, time: VirtualTime, pace: SendingPace) -> float:
        pace.throttled()
        before = time.now
        await time.run(pace.acquire())
        return time.now - before

    async def test_holds_follow_ses_backoff_5_10_30_seconds_then_20_minutes(self) -> None:
        time = VirtualTime()
        pace = a_pace(time)

        waits = [await self.wait_after_throttle(time, pace) for _ in range(5)]

        assert waits == pytest.approx([5.0, 10.0, 30.0, 1200.0, 1200.0])

    @pytest.mark.parametrize("jitter", [0.0, 0.5, 0.999])
    async def test_jitter_lengthens_a_hold_by_at_most_a_quarter(self, jitter: float) -> None:
        time = VirtualTime()
        pace = a_pace(time, jitter=jitter)

        waits = [await self.wait_after_throttle(time, pace) for _ in range(2)]

        assert waits == pytest.approx([5.0 * (1 + 0.25 * jitter), 10.0 * (1 + 0.25 * jitter)])

    async def test_a_send_between_throttles_starts_the_backoff_again(self) -> None:
        time = VirtualTime()
        pace = a_pace(time)
        await self.wait_after_throttle(time, pace)
        pace.record_sent()

        assert await self.wait_after_throttle(time, pace) == pytest.approx(5.0)

    async def test_throttles_during_a_hold_count_once(self) -> None:
        time = VirtualTime()
        pace = a_pace(time, rate_per_second=10.0)
        pace.throttled()
        pace.throttled()
        pace.throttled()

        before = time.now
        await time.run(pace.acquire())

        assert time.now - before == pytest.approx(5.0)
        assert pace.rate == pytest.approx(5.0)

    async def test_every_waiting_caller_respects_the_hold_and_one_announcement_is_made(self) -> None:
        time, holds = VirtualTime(), Holds()
        pace = a_pace(time, holds, rate_per_second=10.0)
        pace.throttled()

        times = await acquire_times(time, pace, 4)

        assert times[0] == pytest.approx(1005.0)
        assert gaps(times) == pytest.approx([0.2] * 3)  # the halved rate
        assert holds.announced == [("throttled", START + timedelta(seconds=5))]

    async def test_a_caller_waiting_for_its_slot_when_the_throttle_comes_waits_for_the_hold(self) -> None:
        time = VirtualTime()
        pace = a_pace(time, rate_per_second=1.0)
        await time.run(pace.acquire())
        second = asyncio.ensure_future(pace.acquire())  # its slot is 1 s away
        await time.settle()

        pace.throttled()
        await time.run(second)

        assert time.now == pytest.approx(1005.0)

    async def test_each_new_hold_is_announced_once(self) -> None:
        time, holds = VirtualTime(), Holds()
        pace = a_pace(time, holds)

        await self.wait_after_throttle(time, pace)
        await self.wait_after_throttle(time, pace)

        assert holds.announced == [
            ("throttled", START + timedelta(seconds=5)),
            ("throttled", START + timedelta(seconds=15)),
        ]

    async def test_the_rate_halves_down_to_an_eighth_then_comes_back_by_steps(self) -> None:
        time = VirtualTime()
        pace = a_pace(time, rate_per_second=8.0)

        rates = []
        for _ in range(4):
            await self.wait_after_throttle(time, pace)
            rates.append(pace.rate)
        assert rates == pytest.approx([4.0, 2.0, 1.0, 1.0])

        pace.record_sent()
        assert pace.rate == pytest.approx(1.0 + 8.0 / 500)
        for _ in range(500):
            pace.record_sent()
        assert pace.rate == pytest.approx(8.0)

    async def test_a_daily_quota_throttle_holds_until_the_oldest_minute_leaves(self) -> None:
        time, holds = VirtualTime(), Holds()
        oldest = START - timedelta(hours=23, minutes=50)
        pace = a_pace(time, holds, [(oldest, 3)])

        pace.throttled(daily_quota_exceeded=True)
        await time.run(pace.acquire())

        frees_at = oldest.replace(second=0) + timedelta(hours=24, minutes=1)
        assert time.wall() == frees_at
        assert holds.announced == [("quota", frees_at)]
        assert pace.rate == pytest.approx(10.0)

    async def test_a_daily_quota_throttle_with_no_sends_of_ours_holds_an_hour(self) -> None:
        time, holds = VirtualTime(), Holds()
        pace = a_pace(time, holds)

        pace.throttled(daily_quota_exceeded=True)
        await time.run(pace.acquire())

        assert time.wall() == START + timedelta(hours=1)
        assert holds.announced == [("quota", START + timedelta(hours=1))]

    async def test_a_failing_announcement_does_not_stop_the_wait(self) -> None:
        time = VirtualTime()

        async def broken(reason: str, until: datetime) -> None:
            raise RuntimeError("broker away")

        pace = SendingPace(
            an_account(),
            on_hold=broken,
            clock=time.monotonic,
            wall_clock=time.wall,
            sleep=time.sleep,
            jitter=lambda: 0.0,
        )
        pace.throttled()

        await time.run(pace.acquire())

        assert time.now == pytest.approx(1005.0)


class TestProviderLimits:
    async def test_the_rate_is_capped_under_the_providers_maximum(self) -> None:
        time = VirtualTime()
        pace = a_pace(time, rate_per_second=10.0)

        pace.apply_provider_limits(
            ProviderLimits(max_send_rate=2.0, max_24_hour_send=None, sent_last_24_hours=0)
        )
        times = await acquire_times(time, pace, 3)

        assert pace.rate == pytest.approx(1.8)
        assert gaps(times) == pytest.approx([1 / 1.8] * 2)

    async def test_a_lower_configured_rate_stays(self) -> None:
        pace = a_pace(VirtualTime(), rate_per_second=1.0)

        pace.apply_provider_limits(
            ProviderLimits(max_send_rate=14.0, max_24_hour_send=None, sent_last_24_hours=0)
        )

        assert pace.rate == pytest.approx(1.0)

    async def test_an_account_that_ignores_provider_limits_keeps_its_own(self) -> None:
        time, holds = VirtualTime(), Holds()
        pace = a_pace(time, holds, use_provider_limits=False)

        pace.apply_provider_limits(
            ProviderLimits(max_send_rate=1.0, max_24_hour_send=0, sent_last_24_hours=5)
        )
        await time.run(pace.acquire())

        assert pace.rate == pytest.approx(10.0)
        assert holds.announced == []

    async def test_the_providers_quota_counts_sends_of_other_systems(self) -> None:
        time, holds = VirtualTime(), Holds()
        history = [(START - timedelta(hours=3), 1)]
        pace = a_pace(time, holds, history)
        # 200 a day, 199 sent: ours (1) and 198 by someone else: one more fits.
        pace.apply_provider_limits(
            ProviderLimits(max_send_rate=None, max_24_hour_send=200, sent_last_24_hours=199)
        )
        await time.run(pace.acquire())
        pace.record_sent()

        await time.run(pace.acquire())

        # Ours leaves the window tomorrow; the others' stop counting an hour after the reading.
        assert time.wall() == START + timedelta(hours=1)
        assert holds.announced == [("quota", START + timedelta(hours=1))]

    async def test_a_quota_filled_by_others_alone_is_looked_at_again_an_hour_later(self) -> None:
        time, holds = VirtualTime(), Holds()
        pace = a_pace(time, holds)
        pace.apply_provider_limits(
            ProviderLimits(max_send_rate=None, max_24_hour_send=200, sent_last_24_hours=200)
        )

        await time.run(pace.acquire())

        assert time.wall() == START + timedelta(hours=1)
        assert holds.announced == [("quota", START + timedelta(hours=1))]

    async def test_new_limits_wake_the_callers_waiting_for_room(self) -> None:
        time = VirtualTime()
        pace = a_pace(time, daily_quota=1000)
        pace.apply_provider_limits(
            ProviderLimits(max_send_rate=None, max_24_hour_send=5, sent_last_24_hours=5)
        )
        waiting = asyncio.ensure_future(pace.acquire())
        await time.settle()
        assert not waiting.done()

        pace.apply_provider_limits(
            ProviderLimits(max_send_rate=None, max_24_hour_send=50, sent_last_24_hours=5)
        )
        await time.settle()

        assert waiting.done()
        assert time.wall() == START


class TestSentWindow:
    def test_a_late_send_is_counted_in_its_own_minute(self) -> None:
        window = SentWindow()
        window.add(START)
        window.add(START + timedelta(minutes=2))
        window.add(START + timedelta(minutes=1))
        window.add(START - timedelta(minutes=5))

        assert window.total == 4
        assert window.frees(1) == START.replace(second=0) - timedelta(minutes=5) + timedelta(
            hours=24, minutes=1
        )
        assert window.frees(2) == START.replace(second=0) + timedelta(hours=24, minutes=1)
        assert window.frees(3) == START.replace(second=0) + timedelta(hours=24, minutes=2)
        assert window.frees(5) is None

    def test_a_minute_leaves_a_full_day_after_it_ends(self) -> None:
        minute = START.replace(second=0)
        window = SentWindow([(minute, 3)])

        window.expire(minute + timedelta(hours=24, seconds=59))
        assert window.total == 3
        window.expire(minute + timedelta(hours=24, minutes=1))
        assert window.total == 0
