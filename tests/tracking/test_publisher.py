"""The publisher marshals its messages itself: the bytes must be exactly the AMQP frames pamqp
(aiormq's own marshaller) makes for the same message. Opens and clicks leave bundled, one
message per batch."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from services.tracking import engagement
from services.tracking.engagement import Outgoing
from services.tracking.publisher import Bundled, marshal_message
from shared.contracts import EngagementsRecorded, topology


def _pamqp_frames(outgoing: engagement.Outgoing, channel: int, max_content_size: int) -> bytes:
    properties = commands.Basic.Properties(
        content_type="application/json", delivery_mode=2, message_id=outgoing.event_id
    )
    body = outgoing.body
    return b"".join(
        [
            frame.marshal(
                commands.Basic.Publish(
                    exchange=topology.EVENTS.name, routing_key=outgoing.routing_key, mandatory=True
                ),
                channel,
            ),
            frame.marshal(ContentHeader(0, len(body), properties), channel),
            *(
                frame.marshal(ContentBody(body[i : i + max_content_size]), channel)
                for i in range(0, len(body), max_content_size)
            ),
        ]
    )


class TestMarshalMessage:
    @pytest.mark.parametrize(
        "outgoing",
        [
            pytest.param(engagement.opened(3, 4, machine=False), id="open"),
            pytest.param(
                engagement.clicked(3, 0, "https://example.org/" + "a" * 300, machine=True), id="click"
            ),
        ],
    )
    @pytest.mark.parametrize("channel", [1, 300])
    def test_the_frames_are_pamqps(self, outgoing: engagement.Outgoing, channel: int) -> None:
        assert marshal_message(outgoing, channel, 131_064) == _pamqp_frames(outgoing, channel, 131_064)

    def test_a_body_larger_than_a_frame_is_split_as_pamqp_would(self) -> None:
        outgoing = engagement.clicked(3, 4, "https://example.org/" + "a" * 300, machine=False)

        assert marshal_message(outgoing, 1, 100) == _pamqp_frames(outgoing, 1, 100)


class Inner:
    """A stand-in for the confirming publisher: records the messages, answers chosen outcomes."""

    def __init__(self, *outcomes: BaseException | None) -> None:
        self.messages: list[Outgoing] = []
        self._outcomes = outcomes

    async def publish(self, batch: Sequence[Outgoing]) -> list[BaseException | None]:
        self.messages.extend(batch)
        return list(self._outcomes)


class TestBundled:
    async def test_the_opens_and_clicks_of_a_batch_leave_as_one_message_and_share_its_outcome(self) -> None:
        batch = [
            engagement.opened(1, 1, machine=False),
            engagement.clicked(1, 2, "https://example.org/", machine=False),
            engagement.opened(1, 3, machine=True),
        ]
        refused = ConnectionError("broker away")
        inner = Inner(refused)

        outcomes = await Bundled(inner).publish(batch)

        assert outcomes == [refused] * 3
        (message,) = inner.messages
        recorded = EngagementsRecorded.model_validate_json(message.body)
        assert [str(e.event_id) for e in (*recorded.opens, *recorded.clicks)] == [
            batch[0].event_id,
            batch[2].event_id,
            batch[1].event_id,
        ]

    async def test_any_other_event_goes_as_it_is_with_its_own_outcome(self) -> None:
        other = engagement.opened(1, 9, machine=False)._replace(routing_key="test.unbound")
        batch = [other, engagement.opened(1, 1, machine=False)]
        unroutable = LookupError("no queue bound")
        inner = Inner(None, unroutable)

        outcomes = await Bundled(inner).publish(batch)

        assert outcomes == [unroutable, None]
        assert [m.routing_key for m in inner.messages] == [EngagementsRecorded.routing_key, "test.unbound"]
        assert inner.messages[1] == other
