"""Sending a batch, through the running sender: the real database and vhost, a recording transport.

Each test configures its own account and campaign, publishes a SendBatch to the account's queue
as audience does, and checks what the transport got, the delivery ledger and the delivery events.
"""

from __future__ import annotations

import time
from email import message_from_bytes, policy

import pytest

from services.sender.message import CompiledCampaign
from services.sender.sending import CompiledCampaigns
from shared.contracts import MessageFailed, MessageSent, MessageSkipped, headers
from shared.personalisation import TemplateProblem
from tests.sender.conftest import DeliveryEvents, RunningSender
from tests.sender.examples import a_batch, a_campaign, a_recipient, an_account
from tests.sender.fakes import PERMANENT_REPLY
from tests.support import eventually

# The first retry tier is 5 s; a retried batch is back well within this.
RETRY_WITHIN = 20.0


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
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
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
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id, subject="Olá, {{ nome }}")
        await sender.start_campaign(campaign)
        recipients = [a_recipient(1, name="Ana Souza"), a_recipient(2, name="Bruno Lima")]

        await sender.publish_batch(a_batch(campaign, recipients))

        await outcomes(sender, campaign.campaign_id, {1: "sent", 2: "sent"})
        for mail, recipient in zip(sender.transports.sent(campaign.account_id), recipients, strict=True):
            message = message_from_bytes(mail.data, policy=policy.default)
            assert mail.recipient == recipient.email
            assert message["Subject"] == f"Olá, {recipient.name}"
            assert message[headers.DELIVERY_ID_HEADER] == f"{campaign.campaign_id}.{recipient.recipient_id}"

    async def test_a_batch_delivered_again_sends_nothing_again(
        self, sender: RunningSender, delivery_events: DeliveryEvents
    ) -> None:
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
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
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
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
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
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
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
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
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id, html="<p>Olá de {{ cidade }}</p>")
        await sender.start_campaign(campaign)
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
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id, subject="Olá {{ nome")
        await sender.start_campaign(campaign)

        await sender.publish_batch(a_batch(campaign, [a_recipient(1), a_recipient(2)]))

        await outcomes(sender, campaign.campaign_id, {1: "failed", 2: "failed"})
        reasons = {row["reason"] for row in (await sender.deliveries(campaign.campaign_id)).values()}
        assert len(reasons) == 1
        assert reasons.pop().startswith("template error: subject")
        assert sender.transports.attempts == {}

    async def test_an_address_no_message_can_carry_fails_and_the_rest_go(self, sender: RunningSender) -> None:
        account = await sender.configure(an_account())
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
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
        account = await sender.configure(an_account(rate_per_second=rate))
        campaign = a_campaign(account.config.account_id)
        await sender.start_campaign(campaign)
        count = 6
        started = time.monotonic()

        await sender.publish_batch(a_batch(campaign, [a_recipient(i) for i in range(1, count + 1)]))

        await outcomes(sender, campaign.campaign_id, dict.fromkeys(range(1, count + 1), "sent"))
        elapsed = time.monotonic() - started
        # Slots are 1/rate apart after an immediate first one: the sends span at least (count-1)/rate.
        assert elapsed >= (count - 1) / rate * 0.95


class TestCompiledCampaigns:
    def test_compiles_a_campaign_once(self) -> None:
        campaigns = CompiledCampaigns()
        content = a_campaign(1)

        compiled = campaigns.get(content)

        assert isinstance(compiled, CompiledCampaign)
        assert compiled.content is content
        assert campaigns.get(content) is compiled

    def test_remembers_why_a_campaign_does_not_compile(self) -> None:
        campaigns = CompiledCampaigns()
        content = a_campaign(1, html="{% for %}")

        problem = campaigns.get(content)

        assert isinstance(problem, TemplateProblem)
        assert str(problem).startswith("html")
        assert campaigns.get(content) is problem

    def test_forgets_the_least_recently_used_beyond_its_size(self) -> None:
        campaigns = CompiledCampaigns()
        contents = [a_campaign(1, campaign_id=i) for i in range(1, 66)]
        first = campaigns.get(contents[0])
        second = campaigns.get(contents[1])
        assert campaigns.get(contents[0]) is first  # now more recent than the second

        for content in contents[2:]:
            campaigns.get(content)

        assert campaigns.get(contents[0]) is first
        assert campaigns.get(contents[1]) is not second
