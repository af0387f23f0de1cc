"""The reputation brake's rules, pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.bounce.brake import Action, Rates, breaches, counted_rates, decide
from services.bounce.reputation_repository import Account, Counts, Override, Pause

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ACCOUNT = Account(
    account_id=7,
    name="SES",
    transport="ses",
    ses=None,
    bounce_control=False,
    bounce_threshold=0.05,
    complaint_threshold=0.001,
    pause_hours=24,
)
UNDER = Rates("counters", 0.01, 0.0, 1000)
OVER = Rates("counters", 0.06, 0.0, 1000)
PAUSE = Pause(NOW - timedelta(hours=24), NOW, "bounce rate 6.00% >= 5.00%")
OVERRIDE = Override(7, None, "list cleaned", "admin@example.org", NOW - timedelta(hours=1))


class TestCountedRates:
    def test_below_the_minimum_of_sends_the_rates_are_unknown(self) -> None:
        assert counted_rates(Counts(sent=99, bounced=50, complained=9), min_sends=100) == Rates(
            "counters", None, None, 99
        )

    def test_rates_are_per_message_sent(self) -> None:
        assert counted_rates(Counts(sent=200, bounced=10, complained=1), min_sends=100) == Rates(
            "counters", 0.05, 0.005, 200
        )


class TestBreaches:
    @pytest.mark.parametrize(
        ("rates", "expected"),
        [
            (Rates("cloudwatch", 0.05, 0.0), ["bounce rate 5.00% >= 5.00%"]),
            (Rates("cloudwatch", 0.0499, 0.001), ["complaint rate 0.100% >= 0.100%"]),
            (Rates("cloudwatch", 0.0499, 0.00099), []),
            (Rates("cloudwatch", None, None), []),
        ],
    )
    def test_a_rate_at_its_threshold_is_a_breach(self, rates: Rates, expected: list[str]) -> None:
        assert breaches(ACCOUNT, rates) == expected


class TestDecide:
    def test_a_breach_pauses_for_the_accounts_pause_length_with_the_rates_as_reason(self) -> None:
        decision = decide(ACCOUNT, OVER, None, None, NOW)

        assert decision.action is Action.PAUSE
        assert decision.reason == "reputation brake (counters): bounce rate 6.00% >= 5.00%"
        assert decision.pause_from(NOW, ACCOUNT).until == NOW + timedelta(hours=24)

    def test_rates_under_the_thresholds_or_unknown_do_nothing(self) -> None:
        assert decide(ACCOUNT, UNDER, None, None, NOW).action is Action.NOTHING
        assert decide(ACCOUNT, Rates("counters", None, None, 3), None, None, NOW).action is Action.NOTHING

    def test_a_paused_account_is_not_paused_again(self) -> None:
        assert decide(ACCOUNT, OVER, PAUSE, None, NOW - timedelta(hours=1)).action is Action.NOTHING

    def test_no_resume_before_the_pause_ends_even_when_the_rates_are_back_under(self) -> None:
        assert decide(ACCOUNT, UNDER, PAUSE, None, NOW - timedelta(seconds=1)).action is Action.NOTHING

    def test_no_resume_after_the_pause_while_a_rate_is_still_over(self) -> None:
        assert decide(ACCOUNT, OVER, PAUSE, None, NOW + timedelta(hours=5)).action is Action.NOTHING

    def test_resume_once_the_pause_ended_and_the_rates_are_under_or_unknown(self) -> None:
        assert decide(ACCOUNT, UNDER, PAUSE, None, NOW).action is Action.RESUME
        assert decide(ACCOUNT, Rates("counters", None, None, 0), PAUSE, None, NOW).action is Action.RESUME

    def test_an_override_prevents_a_pause_and_lifts_one(self) -> None:
        assert decide(ACCOUNT, OVER, None, OVERRIDE, NOW).action is Action.NOTHING
        decision = decide(ACCOUNT, OVER, PAUSE, OVERRIDE, NOW - timedelta(hours=1))
        assert decision.action is Action.RESUME
        assert "admin@example.org" in decision.reason
