"""The events the hot paths serialise themselves must be exactly what the contracts describe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from services.tracking import engagement
from shared.contracts import EngagementsRecorded, LinkClicked, MessageOpened, utc_now


class TestOpened:
    def test_the_body_is_a_message_opened_with_every_field_set(self) -> None:
        before = utc_now()

        outgoing = engagement.opened(7, 42, machine=True)

        event = MessageOpened.model_validate_json(outgoing.body)
        assert event.model_fields_set == set(MessageOpened.model_fields)
        assert (event.campaign_id, event.recipient_id, event.machine) == (7, 42, True)
        assert before - timedelta(seconds=1) <= event.opened_at == event.occurred_at <= utc_now()
        assert outgoing.routing_key == MessageOpened.routing_key
        assert outgoing.event_id == str(event.event_id)
        assert event.event_id.version == 4

    def test_every_open_gets_its_own_event_id(self) -> None:
        ids = {engagement.opened(1, 1, machine=False).event_id for _ in range(1000)}

        assert len(ids) == 1000

    @pytest.mark.parametrize("bits", [0, (1 << 128) - 1, 0x0123456789ABCDEF0123456789ABCDEF])
    def test_the_event_id_is_the_version_4_uuid_of_its_random_bits(
        self, bits: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(engagement.random, "getrandbits", lambda _: bits)

        assert engagement.opened(1, 1, machine=False).event_id == str(UUID(int=bits, version=4))


class TestTime:
    @pytest.mark.parametrize(
        "moments",
        [
            pytest.param([1795000000.0], id="on-the-second"),
            pytest.param([1795000000.999999, 1795000001.000001, 1795000001.9999999], id="across-a-second"),
            pytest.param([1795000000.25, 1795000000.5, 1795086400.75], id="same-second-then-next-day"),
        ],
    )
    def test_the_time_is_what_datetime_writes_however_the_seconds_follow(
        self, moments: list[float], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for moment in moments:
            monkeypatch.setattr(engagement.time, "time", lambda moment=moment: moment)

            event = MessageOpened.model_validate_json(engagement.opened(1, 1, machine=False).body)

            expected = datetime.fromtimestamp(moment, UTC)
            assert event.opened_at == expected


class TestClicked:
    def test_the_body_is_a_link_clicked_with_every_field_set_and_the_url_intact(self) -> None:
        url = 'https://example.org/a?b="c"&d=\\e&f=ç'

        outgoing = engagement.clicked(7, 0, url, machine=False)

        event = LinkClicked.model_validate_json(outgoing.body)
        assert event.model_fields_set == set(LinkClicked.model_fields)
        assert (event.campaign_id, event.recipient_id, event.url, event.machine) == (7, 0, url, False)
        assert event.clicked_at == event.occurred_at
        assert outgoing.routing_key == LinkClicked.routing_key
        assert outgoing.event_id == str(event.event_id)


class TestRecorded:
    def test_the_body_is_an_engagements_recorded_carrying_every_item_with_its_own_id(self) -> None:
        opens = [engagement.opened(7, n, machine=False) for n in (1, 2)]
        click = engagement.clicked(7, 3, 'https://example.org/?q="x"', machine=True)

        outgoing = engagement.recorded([opens[0], click, opens[1]])

        event = EngagementsRecorded.model_validate_json(outgoing.body)
        assert [str(e.event_id) for e in event.opens] == [o.event_id for o in opens]
        assert event.opens == [MessageOpened.model_validate_json(o.body) for o in opens]
        assert event.clicks == [LinkClicked.model_validate_json(click.body)]
        assert outgoing.routing_key == EngagementsRecorded.routing_key
        assert outgoing.event_id == str(event.event_id) not in {o.event_id for o in (*opens, click)}

    def test_opens_only_or_clicks_only_are_valid_too(self) -> None:
        only_opens = engagement.recorded([engagement.opened(1, 1, machine=False)])
        only_clicks = engagement.recorded([engagement.clicked(1, 1, "https://example.org/", machine=False)])

        assert len(EngagementsRecorded.model_validate_json(only_opens.body).opens) == 1
        assert len(EngagementsRecorded.model_validate_json(only_clicks.body).clicks) == 1
