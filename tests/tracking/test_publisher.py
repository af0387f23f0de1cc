"""The publisher marshals its messages itself: the bytes must be exactly the AMQP frames pamqp
(aiormq's own marshaller) makes for the same message."""

from __future__ import annotations

import pytest
from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from services.tracking import engagement
from services.tracking.publisher import marshal_message
from shared.contracts import topology


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
