"""The contracts: every message round-trips as JSON, versions are enforced, names are unique."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from pydantic import ValidationError

import shared.contracts as contracts
from shared.contracts import events, headers, topology

SENDER = events.SenderIdentity(name="Itaú Social", email="news@example.org")
EXAMPLES: list[events.Message] = [
    events.CampaignStarted(
        campaign_id=1,
        account_id=2,
        sender=SENDER,
        subject="Olá",
        html="<p>x</p>",
        group_ids=[3, 4],
        priority=7,
    ),
    events.CampaignRecipientsResolved(
        campaign_id=1, account_id=2, included=10, invalid=1, duplicate=2, suppressed=3, unsubscribed=4
    ),
    events.CampaignFailed(campaign_id=1, reason="group 3 not found"),
    events.CampaignCancelled(campaign_id=1),
    events.AccountConfigured(
        account_id=2,
        name="SES",
        transport="smtp",
        smtp=events.SmtpConnection(
            host="smtp.example", port=587, security="starttls", password_encrypted="x"
        ),
        rate_per_second=10,
        active=True,
        daily_quota=50_000,
        warmup=events.Warmup(started_on=datetime.now(UTC).date(), start_per_day=200),
    ),
    events.SendBatch(
        campaign_id=1,
        account_id=2,
        recipients=[events.Recipient(recipient_id=1, email="a@b.c", fields={"k": "v"})],
    ),
    events.MessageSent(
        campaign_id=1,
        account_id=2,
        recipient_id=1,
        email="a@b.c",
        provider_message_id="p",
        sent_at=datetime.now(UTC),
    ),
    events.MessageFailed(campaign_id=1, account_id=2, recipient_id=1, email="a@b.c", reason="550"),
    events.MessageSkipped(campaign_id=1, account_id=2, recipient_id=1, email="a@b.c", reason="cancelled"),
    events.MessageOpened(campaign_id=1, recipient_id=1, opened_at=datetime.now(UTC)),
    events.LinkClicked(
        campaign_id=1,
        recipient_id=0,
        url="https://example.org/a?b=1",
        clicked_at=datetime.now(UTC),
        machine=True,
    ),
    events.EngagementsRecorded(
        opens=[events.MessageOpened(campaign_id=1, recipient_id=1, opened_at=datetime.now(UTC))],
        clicks=[
            events.LinkClicked(
                campaign_id=1, recipient_id=1, url="https://example.org/", clicked_at=datetime.now(UTC)
            )
        ],
    ),
    events.UnsubscribeRequested(
        campaign_id=1,
        recipient_id=1,
        scope="campaign",
        reason="muitos e-mails",
        requested_at=datetime.now(UTC),
    ),
    events.MessageIndeterminate(
        campaign_id=1, account_id=2, recipient_id=1, email="a@b.c", reason="sender died mid-send"
    ),
    events.MessageBounced(
        campaign_id=1,
        account_id=2,
        recipient_id=1,
        email="a@b.c",
        kind="permanent",
        subtype="General",
        diagnostic="smtp; 550 5.1.1 user unknown",
        bounced_at=datetime.now(UTC),
    ),
    events.MessageComplained(
        campaign_id=1,
        account_id=2,
        recipient_id=1,
        email="a@b.c",
        feedback_type="abuse",
        complained_at=datetime.now(UTC),
    ),
    events.MessageDelivered(
        campaign_id=1, account_id=2, recipient_id=1, email="a@b.c", delivered_at=datetime.now(UTC)
    ),
    events.CampaignPaused(campaign_id=1),
    events.CampaignResumed(campaign_id=1),
    events.AccountPaused(account_id=2, reason="bounce rate 5.2%", source="bounce", until=datetime.now(UTC)),
    events.AccountResumed(account_id=2, reason="pause over", source="bounce"),
    events.AccountHeld(account_id=2, reason="quota", until=datetime.now(UTC)),
    events.AddressSuppressed(email="a@b.c", reason="bounce", diagnostic="550 5.1.1", account_id=2),
    events.AddressUnsuppressed(email="a@b.c"),
    events.RecipientUnsubscribed(email="a@b.c", scope="all", campaign_id=1, recipient_id=1),
    events.SendRequested(
        system="polo",
        idempotency_key="aviso-42",
        recipients=[events.SendRecipient(email="a@b.c", name="Ana", fields={"curso": "Física"})],
        subject="Aviso",
        html="<p>{{ nome }}</p>",
        message_type="aviso",
        tenant="xy",
    ),
    events.SendAccepted(
        system="polo",
        idempotency_key="aviso-42",
        send_id=uuid4(),
        campaign_id=1,
        sender="avisos@polo.example",
    ),
    events.SendRejected(system="polo", idempotency_key="aviso-43", code="unknown_route", reason="no rule"),
    events.TestSendRequested(
        account=events.AccountConfigured(
            account_id=2, name="SES", transport="smtp", rate_per_second=1, active=True
        ),
        sender=SENDER,
        to="a@b.c",
        subject="Teste",
        text="Teste",
    ),
]


def _message_classes() -> set[type[events.Message]]:
    return {
        cls
        for _, cls in inspect.getmembers(events, inspect.isclass)
        if issubclass(cls, events.Message)
        and cls.__module__ == events.__name__
        and cls not in (events.Message, events.Event, events.DeliveryEvent)
    }


class TestMessages:
    def test_every_message_class_has_an_example(self) -> None:
        assert {type(m) for m in EXAMPLES} == _message_classes()

    @pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
    def test_round_trips_through_json(self, message: events.Message) -> None:
        assert type(message).model_validate_json(message.model_dump_json()) == message

    def test_an_unknown_schema_version_is_refused(self) -> None:
        data = EXAMPLES[0].model_dump(mode="json") | {"schema_version": 2}
        with pytest.raises(ValidationError):
            events.CampaignStarted.model_validate(data)

    def test_fields_added_by_a_newer_producer_are_ignored(self) -> None:
        data = EXAMPLES[3].model_dump(mode="json") | {"added_later": True}
        assert events.CampaignCancelled.model_validate(data) == EXAMPLES[3]

    def test_an_account_configured_by_an_older_producer_gets_the_default_brake(self) -> None:
        example = next(m for m in EXAMPLES if isinstance(m, events.AccountConfigured))
        data = example.model_dump(mode="json")
        for field in ("bounce_control", "bounce_threshold", "complaint_threshold", "pause_hours"):
            del data[field]
        account = events.AccountConfigured.model_validate(data)
        assert (account.bounce_control, account.bounce_threshold, account.complaint_threshold) == (
            False,
            0.05,
            0.001,
        )
        assert account.pause_hours == 24

    def test_events_are_immutable(self) -> None:
        with pytest.raises(ValidationError):
            EXAMPLES[2].reason = "changed"  # type: ignore[misc]

    def test_each_event_has_a_distinct_routing_key(self) -> None:
        keys = [cls.routing_key for cls in _message_classes() if issubclass(cls, events.Event)]
        assert len(keys) == len(set(keys))
        assert all(key.count(".") == 1 and key == key.lower() for key in keys)

    def test_a_batch_needs_recipients(self) -> None:
        with pytest.raises(ValidationError):
            events.SendBatch(campaign_id=1, account_id=1, recipients=[])


class TestExports:
    def test_all_is_sorted_and_complete(self) -> None:
        assert contracts.__all__ == sorted(contracts.__all__)
        public = {name for name in dir(contracts) if not name.startswith("_")} - {"annotations"}
        assert public == set(contracts.__all__)


class TestTopology:
    def test_queue_names_are_unique_and_follow_the_convention(self) -> None:
        names = [q.name for q in topology.EVENT_QUEUES]
        assert len(names) == len(set(names))
        for queue in topology.EVENT_QUEUES:
            consumer, routing_key = queue.name.split(".", 1)
            assert consumer in {"campaign", "audience", "sender", "bounce", "tracking"}
            assert routing_key == queue.routing_key

    def test_every_event_queue_dead_letters(self) -> None:
        for queue in topology.EVENT_QUEUES:
            assert queue.arguments is not None
            assert queue.arguments["x-dead-letter-exchange"] == topology.DEAD_LETTER.name

    def test_account_queue_is_a_single_consumer_priority_queue(self) -> None:
        queue = topology.account_queue(42)
        assert queue.name == "sender.account.42"
        assert queue.routing_key == topology.account_routing_key(42) == "account.42"
        assert queue.arguments is not None
        assert queue.arguments["x-max-priority"] == topology.MAX_PRIORITY
        assert queue.arguments["x-single-active-consumer"] is True

    def test_retry_delays_grow_then_repeat_the_last(self) -> None:
        delays = [topology.retry_delay(attempt) for attempt in range(2, 8)]
        assert delays[:3] == list(topology.RETRY_DELAYS_SECONDS)
        assert delays[3:] == [topology.RETRY_DELAYS_SECONDS[-1]] * 3

    def test_retry_queue_sends_back_through_the_default_exchange(self) -> None:
        queue = topology.retry_queue(30)
        assert queue.arguments is not None
        assert queue.arguments["x-message-ttl"] == 30_000
        assert queue.arguments["x-dead-letter-exchange"] == ""


class TestHeaders:
    def test_delivery_id_names_campaign_and_recipient(self) -> None:
        assert headers.delivery_id(12, 345) == "12.345"


class TestSenderControl:
    def test_each_replica_gets_its_own_transient_queue_per_pattern(self) -> None:
        queues = [
            topology.sender_control_queue(instance, pattern)
            for instance in ("a", "b")
            for pattern in topology.SENDER_CONTROL_PATTERNS
        ]
        assert len({q.name for q in queues}) == len(queues)
        assert all(q.exclusive and q.auto_delete and not q.durable for q in queues)

    def test_patterns_cover_every_account_and_campaign_control_event(self) -> None:
        control = [
            events.AccountConfigured,
            events.AccountPaused,
            events.AccountResumed,
            events.CampaignPaused,
            events.CampaignResumed,
            events.CampaignCancelled,
        ]
        prefixes = {pattern.removesuffix(".*") for pattern in topology.SENDER_CONTROL_PATTERNS}
        assert all(event.routing_key.split(".")[0] in prefixes for event in control)


class TestSendSpec:
    def test_recipients_or_group_content_or_template_sender_or_route(self) -> None:
        base = {"system": "polo", "idempotency_key": "k", "subject": "s", "html": "h", "sender": "a@b.c"}
        for broken, reason in (
            (base, "either 'recipients' or 'group_id'"),
            (base | {"group_id": 1, "recipients": [{"email": "a@b.c"}]}, "either 'recipients' or 'group_id'"),
            (base | {"group_id": 1, "template": "t"}, "either 'template' or 'html'"),
            (
                {k: v for k, v in base.items() if k != "sender"} | {"group_id": 1},
                "'sender' or a 'message_type'",
            ),
            (base | {"group_id": 1, "scheduled_at": "2026-12-01T09:00:00"}, "timezone"),
            (base | {"recipients": [{"email": f"{i}@b.c"} for i in range(1001)]}, "at most 1000"),
        ):
            with pytest.raises(ValidationError, match=reason):
                events.SendRequested.model_validate(broken)
        assert events.SendRequested.model_validate(base | {"group_id": 1}).group_id == 1

    def test_a_campaign_started_by_an_older_producer_has_no_inline_recipients(self) -> None:
        data = EXAMPLES[0].model_dump(mode="json")
        del data["recipients"]
        assert events.CampaignStarted.model_validate(data).recipients == []
