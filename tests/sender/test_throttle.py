"""The per-account rate limit, driven by a fake clock (no real waiting)."""

from __future__ import annotations

import itertools
import time

import pytest

from services.sender.throttle import TokenBucket


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TestTokenBucket:
    def test_the_first_send_goes_at_once(self) -> None:
        bucket = TokenBucket(10, clock=FakeClock())

        assert bucket.reserve() == 0.0

    def test_back_to_back_reservations_are_spaced_one_over_rate_apart(self) -> None:
        bucket = TokenBucket(10, clock=FakeClock())

        waits = [bucket.reserve() for _ in range(5)]

        assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])

    def test_slots_stay_one_over_rate_apart_whatever_the_caller_waited(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(4, clock=clock)
        slots = []
        for pause in (0.0, 0.1, 0.05, 0.3, 0.0):
            clock.advance(pause)
            slots.append(clock.now + bucket.reserve())

        gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
        assert gaps == pytest.approx([0.25] * 4)

    def test_a_caller_slower_than_the_rate_never_waits(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(10, clock=clock)

        waits = []
        for _ in range(5):
            waits.append(bucket.reserve())
            clock.advance(0.1)

        assert waits == pytest.approx([0.0] * 5)

    def test_a_burst_goes_at_once_then_the_rate_holds(self) -> None:
        bucket = TokenBucket(2, burst=3, clock=FakeClock())

        waits = [bucket.reserve() for _ in range(5)]

        assert waits == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0])

    def test_a_long_idle_refills_no_more_than_the_burst(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(2, burst=3, clock=clock)
        for _ in range(3):
            bucket.reserve()

        clock.advance(3600)
        waits = [bucket.reserve() for _ in range(4)]

        assert waits == pytest.approx([0.0, 0.0, 0.0, 0.5])

    def test_tokens_come_back_at_the_rate(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(2, burst=3, clock=clock)
        for _ in range(3):
            bucket.reserve()

        clock.advance(1.0)  # two tokens back at 2/s

        assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.5])

    @pytest.mark.parametrize("rate", [0, -1, -0.5])
    def test_rejects_a_rate_that_is_not_positive(self, rate: float) -> None:
        with pytest.raises(ValueError, match="rate must be positive"):
            TokenBucket(rate, clock=FakeClock())

    def test_rejects_a_burst_below_one(self) -> None:
        with pytest.raises(ValueError, match="burst at least 1"):
            TokenBucket(10, burst=0.5, clock=FakeClock())


class TestAcquire:
    async def test_the_first_acquire_does_not_wait(self) -> None:
        bucket = TokenBucket(0.001)
        started = time.monotonic()

        await bucket.acquire()

        assert time.monotonic() - started < 0.5

    async def test_acquire_waits_for_the_reserved_slot(self) -> None:
        bucket = TokenBucket(20)  # slots 50 ms apart, on the real clock
        started = time.monotonic()

        for _ in range(3):
            await bucket.acquire()

        assert time.monotonic() - started >= 0.1 - 0.005


class TestSetRate:
    def test_a_faster_rate_spaces_the_next_slot_from_the_last_one_reserved(self) -> None:
        bucket = TokenBucket(1, clock=FakeClock())
        waits = [bucket.reserve() for _ in range(3)]

        bucket.set_rate(2)

        assert [*waits, bucket.reserve(), bucket.reserve()] == pytest.approx([0.0, 1.0, 2.0, 2.5, 3.0])
        assert bucket.rate == 2

    def test_a_slower_rate_spaces_the_next_slot_from_the_last_one_reserved(self) -> None:
        bucket = TokenBucket(2, clock=FakeClock())
        waits = [bucket.reserve() for _ in range(2)]

        bucket.set_rate(0.5)

        assert [*waits, bucket.reserve()] == pytest.approx([0.0, 0.5, 2.5])

    def test_an_idle_bucket_goes_at_once_at_its_new_rate(self) -> None:
        clock = FakeClock()
        bucket = TokenBucket(1, clock=clock)
        bucket.reserve()
        clock.advance(10)

        bucket.set_rate(4)

        assert [bucket.reserve(), bucket.reserve()] == pytest.approx([0.0, 0.25])

    def test_rejects_a_rate_that_is_not_positive(self) -> None:
        with pytest.raises(ValueError, match="rate must be positive"):
            TokenBucket(1, clock=FakeClock()).set_rate(0)
