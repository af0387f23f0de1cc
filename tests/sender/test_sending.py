"""Sending a batch, through the running sender: the real database and vhost, a recording transport.

Each test configures its own account and campaign, publishes a SendBatch to the account's queue
as audience does, and checks what the transport got, the delivery ledger and the delivery events.
"""

from __future__ import annotations

import asyncio
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from services.sender.limits import SendingPace
from services.sender.message import CompiledCampaign
from services.sender.sending import _COMPILED_CAMPAIGNS as CACHE_SIZE
from services.sender.sending import CompiledCampaigns
from services.sender.transport import OutgoingMail, TransientSendError
from shared.contracts import (
    AccountConfigured,
    AttachmentRef,
    CampaignStarted,
    MessageFailed,
    MessageSent,
    MessageSkipped,
    headers,
)
from shared.errors import RetryLater
from shared.files import LocalFileStore
from shared.personalisation import TemplateProblem
from tests.sender.conftest import DeliveryEvents, RunningSender
from tests.sender.examples import a_batch, a_campaign, a_recipient, an_account
from tests.sender.fakes import PERMANENT_REPLY, RecordingTransport, RecordingTransports
from tests.support import eventually

# The first retry tier is 5 s; a retried batch is back well within this.
RETRY_WITHIN = 20.0


async def a_started_campaign(
    sender: RunningSender, config: AccountConfigured, **campaign: Any
) -> CampaignStarted:
    """Serve the account and start a campaign of it (`campaign`: a_campaign's options)."""
    await sender.configure(config)
    started = a_campaign(config.account_id, **campaign)
    await sender.start_campaign(started)
    return started


async def outcomes(
    sender: RunningSender, campaign_id: int, expected: dict[int, str], within: float = 20.0
) -> None:
    """Wait until the campaign's deliveries have exactly these statuses."""

    async def reached() -> bool:
        assert await sender.statuses(campaign_id) == expected
        return True

    await eventually(reached, within=within)


@pytest.mark.connected
class TestSendBatch:
    async def test_sends_every_recipient_once_and_records_each(
        self, sender: RunningSender, delivery_events: DeliveryEvents
    ) -> None:
        campaign = await a_started_campaign(sender, an_account())
        recipients = [
            a_recipient(1, name="Ana Souza"),
            a_recipient(2, name="Bruno Lima"),
            a_recipient(3, name="Carla Dias"),
        ]

        await sender.publish_batch(a_batch(campaign, recipients))

        await outcomes(sender, campaign.campaign_id, {1: "sent", 2: "sent", 3: "sent"})
        account_id = campaign.account_id
        assert sender.transports.sent_to(account_id) == {r.email: 1 for r in recipients}
        rows = await sender.deliveries(campaign.campaign_id)
        for r in recipients:
            assert rows[r.recipient_id]["email"] == r.email
            assert rows[r.recipient_id]["provider_message_id"] == f"fake-{account_id}-{r.email}"
            assert rows[r.recipient_id]["finished_at"] is not None

        events = await delivery_events.wait_for(campaign.campaign_id, 3)
        assert all(isinstance(e, MessageSent) for e in events)
        assert sorted(
            (e.recipient_id, e.email, e.name, e.account_id, e.provider_message_id)
            for e in events
            if isinstance(e, MessageSent)
        ) == [
            (r.recipient_id, r.email, r.name, account_id, f"fake-{account_id}-{r.email}") for r in recipients
        ]

    async def test_each_mail_is_personalised_for_its_recipient(self, sender: RunningSender) -> None:
        campaign = await a_started_campaign(sender, an_account(), subject="Olá, {{ nome }}")
        recipients = [a_recipient(1, name="Ana Souza"), a_recipient(2, name="Bruno Lima")]

        await sender.publish_batch(a_batch(campaign, recipients))

        await outcomes(sender, campaign.campaign_id, {1: "sent", 2: "sent"})
        # Up to max_connections sends are in flight at once: they may end in any order.
        mails = {mail.recipient: mail for mail in sender.transports.sent(campaign.account_id)}
        assert sender.transports.sent_to(campaign.account_id) == {r.email: 1 for r in recipients}
        for recipient in recipients:
            message = message_from_bytes(mails[recipient.email].data, policy=policy.default)
            assert message["Subject"] == f"Olá, {recipient.name}"
            assert message[headers.DELIVERY_ID_HEADER] == f"{campaign.campaign_id}.{recipient.recipient_id}"

    async def test_a_batch_delivered_again_sends_nothing_again(
        self, sender: RunningSender, delivery_events: DeliveryEvents
    ) -> None:
        campaign = await a_started_campaign(sender, an_account())
        batch = a_batch(campaign, [a_recipient(1), a_recipient(2)])
        await sender.publish_batch(batch)
        await outcomes(sender, campaign.campaign_id, {1: "sent", 2: "sent"})
        first_rows = await sender.deliveries(campaign.campaign_id)

        await sender.publish_batch(batch)
        # The account's queue is FIFO and its consumer serial: once this one is sent, so is the repeat.
        await sender.publish_batch(a_batch(campaign, [a_recipient(3)]))

        await outcomes(sender, campaign.campaign_id, {1: "sent", 2: "sent", 3: "sent"})
        assert list(sender.transports.sent_to(campaign.account_id).values()) == [1, 1, 1]
        rows = await sender.deliveries(campaign.campaign_id)
        assert [rows[i]["finished_at"] for i in (1, 2)] == [first_rows[i]["finished_at"] for i in (1, 2)]
        events = await delivery_events.wait_for(campaign.campaign_id, 3)
        assert sorted(e.recipient_id for e in events) == [1, 2, 3]

    async def test_a_permanent_refusal_fails_that_delivery_and_the_rest_go(
        self, sender: RunningSender, delivery_events: DeliveryEvents
    ) -> None:
        campaign = await a_started_campaign(sender, an_account())
        refused = a_recipient(2)
        sender.transports.refuse_permanently(refused.email)

        await sender.publish_batch(a_batch(campaign, [a_recipient(1), refused, a_recipient(3)]))

        await outcomes(sender, campaign.campaign_id, {1: "sent", 2: "failed", 3: "sent"})
        row = (await sender.deliveries(campaign.campaign_id))[2]
        assert (row["reason"], row["provider_message_id"]) == (PERMANENT_REPLY, None)
        assert refused.email not in sender.transports.sent_to(campaign.account_id)
        events = await delivery_events.wait_for(campaign.campaign_id, 3)
        [failed] = [e for e in events if isinstance(e, MessageFailed)]
        assert (failed.recipient_id, failed.email, failed.reason) == (2, refused.email, PERMANENT_REPLY)
        assert sorted(e.recipient_id for e in events if isinstance(e, MessageSent)) == [1, 3]

    async def test_a_transient_refusal_gives_the_claim_back_and_the_batch_is_retried(
        self, sender: RunningSender, delivery_events: DeliveryEvents
    ) -> None:
        # One connection: one send at a time, so the batch stops right after the refused one.
        campaign = await a_started_campaign(sender, an_account(max_connections=1))
        first, deferred, last = a_recipient(1), a_recipient(2), a_recipient(3)
        sender.transports.refuse_transiently(deferred.email)

        await sender.publish_batch(a_batch(campaign, [first, deferred, last]))

        async def refused_once() -> bool:
            assert sender.transports.attempts[deferred.email] == 1
            # Its claim is given back (no row), nothing is marked failed, and the batch stops there.
            assert await sender.statuses(campaign.campaign_id) == {1: "sent"}
            return True

        await eventually(refused_once)
        assert sender.transports.attempts[last.email] == 0

        await outcomes(sender, campaign.campaign_id, {1: "sent", 2: "sent", 3: "sent"}, within=RETRY_WITHIN)
        assert sender.transports.sent_to(campaign.account_id) == {
            first.email: 1,
            deferred.email: 1,
            last.email: 1,
        }
        assert sender.transports.attempts[deferred.email] == 2
        events = await delivery_events.wait_for(campaign.campaign_id, 3)
        assert sorted((e.recipient_id, type(e).__name__) for e in events) == [
            (1, "MessageSent"),
            (2, "MessageSent"),
            (3, "MessageSent"),
        ]
        rows = await sender.deliveries(campaign.campaign_id)
        assert [rows[i]["reason"] for i in (1, 2, 3)] == [None, None, None]

    async def test_a_cancelled_campaign_skips_its_recipients(
        self, sender: RunningSender, delivery_events: DeliveryEvents
    ) -> None:
        campaign = await a_started_campaign(sender, an_account())
        await sender.cancel_campaign(campaign.campaign_id)
        recipients = [a_recipient(1), a_recipient(2)]

        await sender.publish_batch(a_batch(campaign, recipients))

        await outcomes(sender, campaign.campaign_id, {1: "skipped", 2: "skipped"})
        rows = await sender.deliveries(campaign.campaign_id)
        assert {row["reason"] for row in rows.values()} == {"campaign cancelled"}
        assert sender.transports.attempts == {}
        events = await delivery_events.wait_for(campaign.campaign_id, 2)
        assert all(isinstance(e, MessageSkipped) for e in events), events
        assert sorted((e.recipient_id, e.reason) for e in events if isinstance(e, MessageSkipped)) == [
            (1, "campaign cancelled"),
            (2, "campaign cancelled"),
        ]

    async def test_a_recipient_the_template_cannot_render_for_fails_and_the_rest_go(
        self, sender: RunningSender, delivery_events: DeliveryEvents
    ) -> None:
        campaign = await a_started_campaign(sender, an_account(), html="<p>Olá de {{ cidade }}</p>")
        without_field = a_recipient(2)

        await sender.publish_batch(a_batch(campaign, [a_recipient(1, cidade="Recife"), without_field]))

        await outcomes(sender, campaign.campaign_id, {1: "sent", 2: "failed"})
        reason = (await sender.deliveries(campaign.campaign_id))[2]["reason"]
        assert reason == "template error: html: 'cidade' is undefined"
        assert without_field.email not in sender.transports.attempts
        events = await delivery_events.wait_for(campaign.campaign_id, 2)
        assert [(e.recipient_id, e.reason) for e in events if isinstance(e, MessageFailed)] == [(2, reason)]

    async def test_a_campaign_whose_template_does_not_compile_fails_every_delivery(
        self, sender: RunningSender
    ) -> None:
        campaign = await a_started_campaign(sender, an_account(), subject="Olá {{ nome")

        await sender.publish_batch(a_batch(campaign, [a_recipient(1), a_recipient(2)]))

        await outcomes(sender, campaign.campaign_id, {1: "failed", 2: "failed"})
        reasons = {row["reason"] for row in (await sender.deliveries(campaign.campaign_id)).values()}
        assert len(reasons) == 1
        assert reasons.pop().startswith("template error: subject")
        assert sender.transports.attempts == {}

    async def test_an_address_no_message_can_carry_fails_and_the_rest_go(self, sender: RunningSender) -> None:
        campaign = await a_started_campaign(sender, an_account())
        broken = a_recipient(2, email="ana@example.com\r\nBcc: victim@example.net")

        await sender.publish_batch(a_batch(campaign, [a_recipient(1), broken, a_recipient(3)]))

        await outcomes(sender, campaign.campaign_id, {1: "sent", 2: "failed", 3: "sent"})
        reason = (await sender.deliveries(campaign.campaign_id))[2]["reason"]
        assert reason.startswith("invalid message: ")
        assert broken.email not in sender.transports.attempts

    async def test_a_batch_that_comes_before_its_campaign_waits_for_it(self, sender: RunningSender) -> None:
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id)
        batch = a_batch(campaign, [a_recipient(1), a_recipient(2)])

        await sender.publish_batch(batch)
        await sender.publish(campaign)

        await outcomes(sender, campaign.campaign_id, {1: "sent", 2: "sent"}, within=RETRY_WITHIN)
        assert list(sender.transports.sent_to(campaign.account_id).values()) == [1, 1]

    async def test_holds_the_accounts_rate(self, sender: RunningSender) -> None:
        rate = 8.0
        campaign = await a_started_campaign(sender, an_account(rate_per_second=rate))
        count = 6
        started = time.monotonic()

        await sender.publish_batch(a_batch(campaign, [a_recipient(i) for i in range(1, count + 1)]))

        await outcomes(sender, campaign.campaign_id, dict.fromkeys(range(1, count + 1), "sent"))
        elapsed = time.monotonic() - started
        # Slots are 1/rate apart after an immediate first one: the sends span at least (count-1)/rate.
        assert elapsed >= (count - 1) / rate * 0.95


@pytest.mark.connected
class TestThrottledProvider:
    async def test_a_throttled_send_waits_for_the_hold_and_slows_the_account_without_failing(
        self, sender: RunningSender, delivery_events: DeliveryEvents
    ) -> None:
        rate = 100.0
        campaign = await a_started_campaign(sender, an_account(rate_per_second=rate))
        throttled, other = a_recipient(1), a_recipient(2)
        sender.transports.throttle(throttled.email)
        published = time.monotonic()

        await sender.publish_batch(a_batch(campaign, [throttled, other]))

        await outcomes(sender, campaign.campaign_id, {1: "sent", 2: "sent"})
        # The provider's first backoff step is 5 s (plus jitter): the second attempt waited for it.
        assert time.monotonic() - published >= 5.0
        assert sender.transports.attempts[throttled.email] == 2
        assert sender.transports.sent_to(campaign.account_id) == {throttled.email: 1, other.email: 1}
        events = await delivery_events.wait_for(campaign.campaign_id, 2)
        assert sorted((e.recipient_id, type(e).__name__) for e in events) == [
            (1, "MessageSent"),
            (2, "MessageSent"),
        ]
        assert [row["reason"] for row in (await sender.deliveries(campaign.campaign_id)).values()] == [
            None,
            None,
        ]
        served = sender.served(campaign.account_id)
        assert served is not None and isinstance(served.pace, SendingPace)
        # Halved by the throttle; each send since wins back 1/500 of the rate.
        assert served.pace.rate == pytest.approx(rate / 2, rel=0.01)


class TimedTransport(RecordingTransport):
    """A RecordingTransport whose sends take the time its factory says, timed and counted in flight."""

    async def send(self, mail: OutgoingMail) -> str:
        factory = self._factory
        assert isinstance(factory, TimedTransports)
        factory.started.setdefault(mail.recipient, time.monotonic())
        factory.in_flight += 1
        factory.most_in_flight = max(factory.most_in_flight, factory.in_flight)
        try:
            await asyncio.sleep(factory.takes.get(mail.recipient, factory.send_seconds))
            return await super().send(mail)
        except TransientSendError:
            factory.refused_at.append(time.monotonic())
            raise
        finally:
            factory.in_flight -= 1


class TimedTransports(RecordingTransports):
    """RecordingTransports whose sends take time: `takes` per recipient, else `send_seconds`."""

    def __init__(self) -> None:
        super().__init__()
        self.takes: dict[str, float] = {}
        # When each recipient's first attempt started, when transient refusals came (monotonic).
        self.started: dict[str, float] = {}
        self.refused_at: list[float] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def __call__(self, config: AccountConfigured) -> TimedTransport:
        transport = TimedTransport(config, self)
        self.made.append(transport)
        return transport


@pytest.mark.connected
class TestConcurrentSends:
    @pytest.fixture
    def transports(self) -> TimedTransports:
        return TimedTransports()

    async def test_up_to_max_connections_sends_are_in_flight_at_once(
        self, sender: RunningSender, transports: TimedTransports
    ) -> None:
        campaign = await a_started_campaign(sender, an_account(max_connections=2))
        transports.send_seconds = 0.2
        count = 7

        await sender.publish_batch(a_batch(campaign, [a_recipient(i) for i in range(1, count + 1)]))

        await outcomes(sender, campaign.campaign_id, dict.fromkeys(range(1, count + 1), "sent"))
        assert transports.most_in_flight == 2
        assert set(transports.sent_to(campaign.account_id).values()) == {1}

    async def test_no_send_starts_after_a_transient_refusal_and_those_in_flight_complete(
        self, sender: RunningSender, transports: TimedTransports
    ) -> None:
        campaign = await a_started_campaign(sender, an_account(max_connections=3))
        recipients = [a_recipient(i) for i in range(1, 10)]
        first, deferred, third = recipients[:3]
        transports.refuse_transiently(deferred.email)
        # The refusal comes while the two other sends are still in flight.
        transports.takes.update({first.email: 0.5, deferred.email: 0.15, third.email: 0.5})

        await sender.publish_batch(a_batch(campaign, recipients))

        async def refused_once() -> bool:
            assert transports.attempts[deferred.email] == 1
            # The sends in flight end as sent; the refused one's claim is given back.
            assert await sender.statuses(campaign.campaign_id) == {1: "sent", 3: "sent"}
            return True

        await eventually(refused_once)
        [refused_at] = transports.refused_at
        assert set(transports.started) == {first.email, deferred.email, third.email}
        assert max(transports.started.values()) < refused_at
        assert [transports.attempts[r.email] for r in recipients[3:]] == [0] * 6

        expected = {r.recipient_id: "sent" for r in recipients}
        await outcomes(sender, campaign.campaign_id, expected, within=RETRY_WITHIN)
        assert set(transports.sent_to(campaign.account_id).values()) == {1}
        assert transports.attempts[deferred.email] == 2


class UnreachableOnce:
    """A FileStore that fails once as an outage does, then reads from `files`."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.reads = 0

    async def read(self, key: str) -> bytes:
        self.reads += 1
        if self.reads == 1:
            raise OSError("connection refused")
        return self.files[key]


def with_attachment(content: CampaignStarted, key: str) -> CampaignStarted:
    return content.model_copy(update={"attachments": [AttachmentRef(key=key, filename="guia.pdf")]})


class TestCompiledCampaigns:
    @pytest.fixture
    def campaigns(self, tmp_path: Path) -> CompiledCampaigns:
        return CompiledCampaigns(LocalFileStore(tmp_path))

    async def test_compiles_a_campaign_once(self, campaigns: CompiledCampaigns) -> None:
        content = a_campaign(1)

        compiled = await campaigns.get(content)

        assert isinstance(compiled, CompiledCampaign)
        assert compiled.content is content
        assert await campaigns.get(content) is compiled

    async def test_remembers_why_a_campaign_does_not_compile(self, campaigns: CompiledCampaigns) -> None:
        content = a_campaign(1, html="{% for %}")

        problem = await campaigns.get(content)

        assert isinstance(problem, TemplateProblem)
        assert str(problem).startswith("html")
        assert await campaigns.get(content) is problem

    async def test_a_file_missing_from_the_store_fails_the_campaign_naming_it(
        self, campaigns: CompiledCampaigns
    ) -> None:
        content = with_attachment(a_campaign(1), "campaigns/1/missing.pdf")

        problem = await campaigns.get(content)

        assert isinstance(problem, TemplateProblem)
        assert "guia.pdf" in str(problem)
        assert await campaigns.get(content) is problem

    async def test_an_unreachable_file_store_means_retry_later_and_is_not_remembered(self) -> None:
        store = UnreachableOnce({"campaigns/1/guia.pdf": b"%PDF-1.4"})
        campaigns = CompiledCampaigns(store)
        content = with_attachment(a_campaign(1), "campaigns/1/guia.pdf")

        with pytest.raises(RetryLater, match="files unavailable"):
            await campaigns.get(content)

        assert isinstance(await campaigns.get(content), CompiledCampaign)
        assert store.reads == 2

    async def test_forgets_the_least_recently_used_beyond_its_size(
        self, campaigns: CompiledCampaigns
    ) -> None:
        contents = [a_campaign(1, campaign_id=i) for i in range(1, CACHE_SIZE + 2)]
        first = await campaigns.get(contents[0])
        second = await campaigns.get(contents[1])
        assert await campaigns.get(contents[0]) is first  # now more recent than the second

        for content in contents[2:]:
            await campaigns.get(content)

        assert await campaigns.get(contents[0]) is first
        assert await campaigns.get(contents[1]) is not second
