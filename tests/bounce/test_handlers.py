"""Bounce learns of every sent message from the real vhost, once, whatever the redeliveries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.bounce.support import Bounce, sent

pytestmark = pytest.mark.connected


class TestRecordSent:
    async def test_a_sent_message_is_recorded_under_its_provider_id(self, bounce: Bounce) -> None:
        event = sent()

        await bounce.publish(event)

        assert await bounce.handled.wait_for(str(event.event_id)) == [None]
        [row] = await bounce.rows(event.provider_message_id)
        assert dict(row) == {
            "provider_message_id": event.provider_message_id,
            "campaign_id": event.campaign_id,
            "recipient_id": event.recipient_id,
            "account_id": event.account_id,
            "email": event.email,
            "sent_at": event.sent_at,
        }

    async def test_a_redelivered_event_is_acknowledged_and_recorded_once(self, bounce: Bounce) -> None:
        event = sent()

        await bounce.publish(event)
        await bounce.publish(event)

        assert await bounce.handled.wait_for(str(event.event_id), times=2) == [None, None]
        [row] = await bounce.rows(event.provider_message_id)
        assert (row["campaign_id"], row["recipient_id"]) == (event.campaign_id, event.recipient_id)

    async def test_another_event_naming_a_known_provider_id_keeps_the_first_record(
        self, bounce: Bounce
    ) -> None:
        first = sent()
        second = sent(
            provider_message_id=first.provider_message_id,
            recipient_id=first.recipient_id + 1,
            sent_at=first.sent_at + timedelta(minutes=1),
        )

        await bounce.publish(first)
        assert await bounce.handled.wait_for(str(first.event_id)) == [None]
        await bounce.publish(second)
        assert await bounce.handled.wait_for(str(second.event_id)) == [None]

        [row] = await bounce.rows(first.provider_message_id)
        assert (row["campaign_id"], row["recipient_id"], row["sent_at"]) == (
            first.campaign_id,
            first.recipient_id,
            first.sent_at,
        )
