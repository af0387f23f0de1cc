"""Campaign keeps every open and click once; only a person's open of a known recipient dates
its reading (machine and anonymous ones are counted apart)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import httpx
import pytest

from shared.contracts import LinkClicked, MessageOpened, utc_now
from tests.campaign.test_api import _campaign
from tests.campaign.test_unsubscribe import _publish, _sent
from tests.support import eventually

pytestmark = pytest.mark.connected


async def _engagements(db: asyncpg.Connection, campaign_id: int) -> list[tuple[str, int, bool, str | None]]:
    rows = await db.fetch(
        "SELECT kind, recipient_id, machine, url FROM campaign.engagements WHERE campaign_id = $1"
        " ORDER BY occurred_at",
        campaign_id,
    )
    return [(r["kind"], r["recipient_id"], r["machine"], r["url"]) for r in rows]


async def _read_at(db: asyncpg.Connection, campaign_id: int) -> object:
    return await db.fetchval(
        "SELECT opened_at FROM campaign.results WHERE campaign_id = $1 AND recipient_id = 1", campaign_id
    )


class TestEngagements:
    async def test_machine_and_anonymous_opens_are_kept_without_dating_the_reading(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        campaign_id = (await _campaign(api))["campaign_id"]
        await _publish(api, _sent(campaign_id, 1))
        start = utc_now()
        proxy = MessageOpened(campaign_id=campaign_id, recipient_id=1, opened_at=start, machine=True)
        anonymous = MessageOpened(
            campaign_id=campaign_id, recipient_id=0, opened_at=start + timedelta(seconds=1)
        )
        person = MessageOpened(
            campaign_id=campaign_id, recipient_id=1, opened_at=start + timedelta(seconds=2)
        )
        for event in (proxy, anonymous, person, person):
            await _publish(api, event)

        async def kept() -> bool:
            assert len(await _engagements(db, campaign_id)) == 3
            return True

        await eventually(kept)
        assert await _engagements(db, campaign_id) == [
            ("open", 1, True, None),
            ("open", 0, False, None),
            ("open", 1, False, None),
        ]
        assert await _read_at(db, campaign_id) == person.opened_at

    async def test_clicks_are_kept_once_each_with_their_link(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        campaign_id = (await _campaign(api))["campaign_id"]
        click = LinkClicked(
            campaign_id=campaign_id, recipient_id=1, url="https://ex.org/a", clicked_at=utc_now()
        )
        scanner = LinkClicked(
            campaign_id=campaign_id,
            recipient_id=1,
            url="https://ex.org/b",
            clicked_at=utc_now(),
            machine=True,
        )
        # A person's click needs the recipient's outcome (until then it is retried).
        await _publish(api, _sent(campaign_id, 1))
        for event in (click, click, scanner):
            await _publish(api, event)

        async def kept() -> bool:
            assert len(await _engagements(db, campaign_id)) == 2
            return True

        await eventually(kept)
        assert sorted(await _engagements(db, campaign_id), key=str) == sorted(
            [("click", 1, False, "https://ex.org/a"), ("click", 1, True, "https://ex.org/b")], key=str
        )
