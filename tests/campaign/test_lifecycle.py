"""Which operator actions are legal in which campaign status."""

from __future__ import annotations

import pytest

from services.campaign.lifecycle import FINISHED, Status, after
from shared.errors import Conflict


class TestAfter:
    def test_a_draft_starts_queued(self) -> None:
        assert after("start", Status.DRAFT) is Status.QUEUED

    @pytest.mark.parametrize("status", [s for s in Status if s is not Status.DRAFT])
    def test_only_a_draft_can_start(self, status: Status) -> None:
        with pytest.raises(Conflict, match=f"cannot start a campaign that is {status.value}"):
            after("start", status)

    @pytest.mark.parametrize("status", [s for s in Status if s not in FINISHED])
    def test_anything_unfinished_can_be_cancelled(self, status: Status) -> None:
        assert after("cancel", status) is Status.CANCELLED

    @pytest.mark.parametrize("status", sorted(FINISHED))
    def test_a_finished_campaign_cannot_be_cancelled(self, status: Status) -> None:
        with pytest.raises(Conflict):
            after("cancel", status)

    @pytest.mark.parametrize("status", [Status.QUEUED, Status.SENDING])
    def test_a_queued_or_sending_campaign_pauses(self, status: Status) -> None:
        assert after("pause", status) is Status.PAUSED

    @pytest.mark.parametrize("status", [s for s in Status if s not in {Status.QUEUED, Status.SENDING}])
    def test_nothing_else_pauses(self, status: Status) -> None:
        with pytest.raises(Conflict, match=f"cannot pause a campaign that is {status.value}"):
            after("pause", status)

    @pytest.mark.parametrize("status", [s for s in Status if s is not Status.PAUSED])
    def test_only_a_paused_campaign_resumes(self, status: Status) -> None:
        with pytest.raises(Conflict):
            after("resume", status)
