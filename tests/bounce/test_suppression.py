"""Which feedback suppresses an address."""

from __future__ import annotations

import pytest

from services.bounce.notifications import Feedback, parse_notification
from services.bounce.suppression import normalise, reason_to_suppress
from tests.bounce.support import ses_notification


def feedback(kind: str, bounce_type: str = "Permanent") -> Feedback:
    return parse_notification(
        ses_notification(kind, provider_message_id="m", email="a@x.com", bounce_type=bounce_type)
    )


class TestReasonToSuppress:
    def test_a_permanent_bounce_suppresses(self) -> None:
        assert reason_to_suppress(feedback("Bounce"), 0, 3) == "bounce"

    def test_a_complaint_suppresses(self) -> None:
        assert reason_to_suppress(feedback("Complaint"), 0, 3) == "complaint"

    @pytest.mark.parametrize(
        ("count", "reason"), [(1, None), (2, None), (3, "soft_bounce"), (4, "soft_bounce")]
    )
    def test_transient_bounces_suppress_at_the_limit(self, count: int, reason: str | None) -> None:
        assert reason_to_suppress(feedback("Bounce", "Transient"), count, 3) == reason

    def test_an_undetermined_bounce_and_a_delivery_never_suppress(self) -> None:
        assert reason_to_suppress(feedback("Bounce", "Undetermined"), 99, 3) is None
        assert reason_to_suppress(feedback("Delivery"), 99, 3) is None


def test_an_address_is_keyed_lower_case() -> None:
    assert normalise(" Ana@Example.COM ") == "ana@example.com"
