"""SES notifications read into feedback: AWS's sample shapes, both SES flavours, bad input."""

from __future__ import annotations

import json

import pytest

from services.bounce.notifications import Recipient, parse_notification
from services.bounce.sns import Malformed
from tests.bounce.support import our_headers, ses_notification


class TestParseNotification:
    @pytest.mark.parametrize(
        ("bounce_type", "subtype"),
        [
            ("Permanent", "General"),
            ("Permanent", "NoEmail"),
            ("Transient", "MailboxFull"),
            ("Undetermined", "Undetermined"),
        ],
    )
    def test_a_bounce_keeps_its_type_subtype_and_diagnostic(self, bounce_type: str, subtype: str) -> None:
        document = ses_notification(
            "Bounce",
            provider_message_id="0100-abc",
            email="Ana@Example.com",
            bounce_type=bounce_type,
            subtype=subtype,
            diagnostic="smtp; 552 mailbox full",
        )

        feedback = parse_notification(json.dumps(document))

        assert (feedback.kind, feedback.bounce_type, feedback.subtype, feedback.provider_message_id) == (
            "bounce",
            bounce_type,
            subtype,
            "0100-abc",
        )
        assert feedback.recipients == (Recipient("Ana@Example.com", "smtp; 552 mailbox full"),)

    def test_a_complaint_keeps_its_feedback_type(self) -> None:
        document = ses_notification(
            "Complaint", provider_message_id="m", email="a@example.com", feedback_type="abuse"
        )

        feedback = parse_notification(json.dumps(document))

        assert (feedback.kind, feedback.subtype, feedback.recipients) == (
            "complaint",
            "abuse",
            (Recipient("a@example.com"),),
        )

    def test_a_delivery(self) -> None:
        feedback = parse_notification(
            json.dumps(ses_notification("Delivery", provider_message_id="m", email="a@x.com"))
        )

        assert (feedback.kind, feedback.recipients) == ("delivery", (Recipient("a@x.com"),))

    def test_an_event_publishing_notification_and_a_decoded_object_are_read_too(self) -> None:
        document = ses_notification("Bounce", provider_message_id="m", email="a@x.com")
        document["eventType"] = document.pop("notificationType")

        assert parse_notification(document).kind == "bounce"

    def test_the_x_mailer_headers_name_the_delivery(self) -> None:
        document = ses_notification(
            "Bounce", provider_message_id="m", email="a@x.com", headers=our_headers(12, 34)
        )

        assert parse_notification(document).delivery_ids() == (12, 34)

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"X-Mailer-Delivery": "12"},
            {"X-Mailer-Delivery": "a.b"},
            {"X-Mailer-Delivery": "12.34", "X-Mailer-Campaign": "99"},
        ],
    )
    def test_without_consistent_headers_there_is_no_delivery(self, headers: dict[str, str]) -> None:
        document = ses_notification("Bounce", provider_message_id="m", email="a@x.com", headers=headers)

        assert parse_notification(document).delivery_ids() is None

    @pytest.mark.parametrize(
        "payload",
        [
            "not json",
            "[]",
            json.dumps({"notificationType": "Received", "mail": {"messageId": "m"}}),
            json.dumps({"notificationType": "Bounce", "mail": {"messageId": "m"}}),
            json.dumps({"notificationType": "Bounce", "mail": {}, "bounce": {}}),
        ],
    )
    def test_anything_else_is_malformed(self, payload: str) -> None:
        with pytest.raises(Malformed):
            parse_notification(payload)

    def test_a_bounce_with_a_wrong_type_is_malformed(self) -> None:
        document = ses_notification("Bounce", provider_message_id="m", email="a@x.com")
        document["bounce"]["bouncedRecipients"] = "a@x.com"

        with pytest.raises(Malformed):
            parse_notification(document)
