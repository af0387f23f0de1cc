"""Campaign keeps every open and click once; only a person's open of a known recipient dates
its reading (machine and anonymous ones are counted apart)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import httpx
import pytest

from shared.contracts import EngagementsRecorded, LinkClicked, MessageOpened, utc_now
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


async def _counters(db: asyncpg.Connection, campaign_id: int) -> tuple[int, ...]:
    row = await db.fetchrow(
        "SELECT read, opens, machine_opens, unique_clicks, total_clicks, machine_clicks"
        " FROM campaign.campaigns WHERE campaign_id = $1",
        campaign_id,
    )
    assert row is not None
    return tuple(row)


class TestEngagementsRecorded:
    async def test_a_batch_is_applied_item_by_item_once_and_delivered_again_applies_nothing_twice(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        campaign_id = (await _campaign(api))["campaign_id"]
        for recipient_id in (1, 2):
            await _publish(api, _sent(campaign_id, recipient_id))
        at = utc_now()
        opens = [
            MessageOpened(campaign_id=campaign_id, recipient_id=1, opened_at=at),
            MessageOpened(campaign_id=campaign_id, recipient_id=2, opened_at=at, machine=True),
            MessageOpened(campaign_id=campaign_id, recipient_id=0, opened_at=at),
        ]
        clicks = [
            LinkClicked(campaign_id=campaign_id, recipient_id=1, url="https://ex.org/a", clicked_at=at),
            LinkClicked(campaign_id=campaign_id, recipient_id=2, url="https://ex.org/a", clicked_at=at),
            LinkClicked(
                campaign_id=campaign_id, recipient_id=2, url="https://ex.org/b", clicked_at=at, machine=True
            ),
        ]
        batch = EngagementsRecorded(opens=opens, clicks=clicks)

        await _publish(api, batch)

        async def kept(count: int) -> None:
            async def all_kept() -> bool:
                assert len(await _engagements(db, campaign_id)) == count
                return True

            await eventually(all_kept)

        await kept(6)
        # read, opens, machine opens, unique clicks, total clicks, machine clicks
        assert await _counters(db, campaign_id) == (1, 2, 1, 2, 2, 1)
        assert await _read_at(db, campaign_id) == at

        # The same message delivered again, then its items bundled anew with one more open: only
        # that open counts (one consumer takes the queue in order, so both came before it).
        later = MessageOpened(campaign_id=campaign_id, recipient_id=2, opened_at=at + timedelta(seconds=1))
        await _publish(api, batch)
        await _publish(api, EngagementsRecorded(opens=[*opens, later], clicks=clicks))

        await kept(7)
        assert await _counters(db, campaign_id) == (2, 3, 1, 2, 2, 1)
        links = await db.fetch(
            "SELECT url, clicks, unique_clickers, machine_clicks FROM campaign.campaign_links"
            " WHERE campaign_id = $1 ORDER BY url",
            campaign_id,
        )
        assert [tuple(r) for r in links] == [("https://ex.org/a", 2, 2, 0), ("https://ex.org/b", 0, 0, 1)]

    async def test_an_item_ahead_of_its_sent_event_is_retried_while_the_rest_is_kept_once(
        self, api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        campaign_id = (await _campaign(api))["campaign_id"]
        at = utc_now()
        person = MessageOpened(campaign_id=campaign_id, recipient_id=1, opened_at=at)
        proxy = MessageOpened(campaign_id=campaign_id, recipient_id=1, opened_at=at, machine=True)

        await _publish(api, EngagementsRecorded(opens=[person, proxy]))

        async def proxy_kept() -> bool:
            assert await _engagements(db, campaign_id) == [("open", 1, True, None)]
            return True

        await eventually(proxy_kept)
        await _publish(api, _sent(campaign_id, 1))

        async def person_kept() -> bool:
            assert len(await _engagements(db, campaign_id)) == 2
            assert await _read_at(db, campaign_id) == at
            return True

        await eventually(person_kept, within=30)
        assert await _counters(db, campaign_id) == (1, 1, 1, 0, 0, 0)
