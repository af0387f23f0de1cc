"""Campaign records tracking's unsubscribe requests on the recipient's result and announces them
with the address (which only campaign knows), once per scope."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from shared.broker import publish_event
from shared.contracts import MessageSent, UnsubscribeRequested, utc_now
from shared.contracts.events import Event
from tests.campaign.test_api import _campaign
from tests.support import Handled, eventually

pytestmark = pytest.mark.connected

EMAIL = "maria.silva@example.org"


async def _publish(api: httpx.AsyncClient, event: Event) -> None:
    await publish_event(api.app.state.runtime.broker, event)  # type: ignore[attr-defined]


def _sent(campaign_id: int, recipient_id: int) -> MessageSent:
    return MessageSent(
        campaign_id=campaign_id,
        account_id=1,
        recipient_id=recipient_id,
        email=EMAIL,
        name="Maria",
        provider_message_id="p-1",
        sent_at=utc_now(),
    )


def _request(
    campaign_id: int, scope: str, reason: str = "", at: datetime | None = None
) -> UnsubscribeRequested:
    return UnsubscribeRequested(
        campaign_id=campaign_id, recipient_id=1, scope=scope, reason=reason, requested_at=at or utc_now()
    )


async def _result(db: asyncpg.Connection, campaign_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT unsubscribed_campaign_at, unsubscribed_all_at, unsubscribe_reason FROM campaign.results"
        " WHERE campaign_id = $1 AND recipient_id = 1",
        campaign_id,
    )


async def _announced(events: Any, campaign_id: int, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        found.extend(e for e in await events("recipient.unsubscribed") if e["campaign_id"] == campaign_id)
        return len(found) >= count

    await eventually(arrived)
    return found


class TestRecordUnsubscribe:
    async def test_each_scope_is_dated_on_the_result_and_announced_once_with_the_address(
        self, api: httpx.AsyncClient, events: Any, db: asyncpg.Connection
    ) -> None:
        await events.listen("recipient.unsubscribed")
        campaign_id = (await _campaign(api))["campaign_id"]
        await _publish(api, _sent(campaign_id, 1))
        await eventually(lambda: _result(db, campaign_id))
        asked = utc_now() - timedelta(minutes=1)

        handled = Handled()
        api.app.state.runtime.broker.add_middleware(handled.middleware())  # type: ignore[attr-defined]
        repeated = _request(campaign_id, "all", "de novo")

        await _publish(api, _request(campaign_id, "campaign", "muitos e-mails", asked))
        (this_campaign,) = await _announced(events, campaign_id, 1)
        await _publish(api, _request(campaign_id, "all", at=asked + timedelta(seconds=5)))
        (every_campaign,) = await _announced(events, campaign_id, 1)
        await _publish(api, repeated)
        assert await handled.wait_for(str(repeated.event_id)) == [None]

        assert (this_campaign["email"], this_campaign["scope"], this_campaign["reason"]) == (
            EMAIL,
            "campaign",
            "muitos e-mails",
        )
        assert (every_campaign["email"], every_campaign["scope"], every_campaign["recipient_id"]) == (
            EMAIL,
            "all",
            1,
        )
        assert datetime.fromisoformat(this_campaign["occurred_at"]) == asked
        row = await _result(db, campaign_id)
        assert row is not None
        assert row["unsubscribed_campaign_at"] == asked
        assert row["unsubscribed_all_at"] == asked + timedelta(seconds=5)
        # The repeated request changed nothing and announced nothing.
        assert row["unsubscribe_reason"] == "muitos e-mails"
        assert await events("recipient.unsubscribed") == []

    async def test_a_request_that_overtakes_the_delivery_outcome_is_recorded_once_it_arrives(
        self, api: httpx.AsyncClient, events: Any, db: asyncpg.Connection
    ) -> None:
        await events.listen("recipient.unsubscribed")
        campaign_id = (await _campaign(api))["campaign_id"]

        await _publish(api, _request(campaign_id, "all", "saí"))
        await _publish(api, _sent(campaign_id, 1))

        (announced,) = await _announced(events, campaign_id, 1)
        assert (announced["email"], announced["scope"], announced["reason"]) == (EMAIL, "all", "saí")
        row = await _result(db, campaign_id)
        assert row is not None and row["unsubscribed_all_at"] is not None
