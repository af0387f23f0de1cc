"""Feedback notifications on the real broker and database: traced back to our deliveries, turned
into events, and into the shared suppression list; raw delivery; the admin API."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest

from shared.contracts import (
    AddressSuppressed,
    AddressUnsuppressed,
    MessageBounced,
    MessageComplained,
    MessageDelivered,
    MessageSent,
    RecipientUnsubscribed,
    utc_now,
)
from tests.bounce.signing import SnsHost
from tests.bounce.support import (
    OTHER_TOPIC,
    RAW_SECRET,
    TOPIC,
    TOPIC_ACCOUNT,
    Bounce,
    Published,
    address,
    our_headers,
    sent,
    ses_notification,
    sns_fields,
)
from tests.support import unique_id

pytestmark = pytest.mark.connected


async def post(bounce: Bounce, sns_host: SnsHost, document: dict[str, Any]) -> None:
    response = await bounce.http.post("/sns", content=json.dumps(sns_host.sign(sns_fields(document))))
    assert response.status_code == 204, response.text


async def a_sent_message(bounce: Bounce) -> MessageSent:
    """A message the sender announced as sent, once bounce has recorded it."""
    message = sent(email=address())
    await bounce.publish(message)
    assert await bounce.handled.wait_for(str(message.event_id)) == [None]
    return message


async def suppressed(bounce: Bounce, email: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await bounce.fetch("SELECT * FROM suppressions WHERE email = $1", email)]


class TestBounceOfASentMessage:
    async def test_is_published_and_suppresses_the_address_everywhere(
        self, bounce: Bounce, sns_host: SnsHost, published: Published
    ) -> None:
        await published.listen(MessageBounced, AddressSuppressed)
        message = await a_sent_message(bounce)

        await post(
            bounce,
            sns_host,
            ses_notification("Bounce", provider_message_id=message.provider_message_id, email=message.email),
        )

        [bounced] = await published.about(MessageBounced, message.email)
        assert (bounced.campaign_id, bounced.recipient_id, bounced.account_id) == (
            message.campaign_id,
            message.recipient_id,
            message.account_id,
        )
        assert (bounced.kind, bounced.subtype, bounced.diagnostic) == (
            "permanent",
            "General",
            "smtp; 550 5.1.1 user unknown",
        )
        [entry] = await suppressed(bounce, message.email)
        assert (entry["reason"], entry["account_id"], entry["campaign_id"]) == (
            "bounce",
            message.account_id,
            message.campaign_id,
        )
        [announced] = await published.about(AddressSuppressed, message.email)
        assert (announced.reason, announced.campaign_id) == ("bounce", message.campaign_id)


class TestTracing:
    async def test_the_x_mailer_headers_name_a_delivery_bounce_never_heard_of(
        self, bounce: Bounce, sns_host: SnsHost, published: Published
    ) -> None:
        await published.listen(MessageDelivered)
        email, campaign_id = address(), unique_id()

        await post(
            bounce,
            sns_host,
            ses_notification(
                "Delivery", provider_message_id="unknown-id", email=email, headers=our_headers(campaign_id, 5)
            ),
        )

        [delivered] = await published.about(MessageDelivered, email)
        assert (delivered.campaign_id, delivered.recipient_id, delivered.account_id) == (
            campaign_id,
            5,
            TOPIC_ACCOUNT,
        )
        assert await suppressed(bounce, email) == []

    async def test_feedback_on_another_systems_message_is_recorded_and_counted(
        self, bounce: Bounce, sns_host: SnsHost, published: Published
    ) -> None:
        await published.listen(MessageBounced, AddressSuppressed)
        email = address()
        before = (await bounce.http.get("/api/v1/feedback/unmatched")).json().get(str(TOPIC_ACCOUNT), 0)

        await post(
            bounce, sns_host, ses_notification("Bounce", provider_message_id="someone-elses", email=email)
        )

        [row] = await bounce.fetch("SELECT * FROM feedback WHERE email = $1", email)
        assert (row["campaign_id"], row["account_id"], row["bounce_type"]) == (
            None,
            TOPIC_ACCOUNT,
            "Permanent",
        )
        after = (await bounce.http.get("/api/v1/feedback/unmatched")).json()[str(TOPIC_ACCOUNT)]
        assert after == before + 1
        # Not our delivery, but still an address no account should send to.
        await published.about(AddressSuppressed, email)
        await published.none_about(MessageBounced, email)


class TestComplaint:
    async def test_suppresses_and_unsubscribes_from_everything(
        self, bounce: Bounce, sns_host: SnsHost, published: Published
    ) -> None:
        await published.listen(MessageComplained, AddressSuppressed, RecipientUnsubscribed)
        message = await a_sent_message(bounce)

        await post(
            bounce,
            sns_host,
            ses_notification(
                "Complaint", provider_message_id=message.provider_message_id, email=message.email
            ),
        )

        [complained] = await published.about(MessageComplained, message.email)
        assert (complained.campaign_id, complained.feedback_type) == (message.campaign_id, "abuse")
        [announced] = await published.about(AddressSuppressed, message.email)
        assert announced.reason == "complaint"
        [unsubscribed] = await published.about(RecipientUnsubscribed, message.email)
        assert (unsubscribed.scope, unsubscribed.campaign_id, unsubscribed.recipient_id) == (
            "all",
            message.campaign_id,
            message.recipient_id,
        )


class TestSoftBounces:
    async def test_suppress_at_the_limit_within_the_window(
        self, bounce: Bounce, sns_host: SnsHost, published: Published
    ) -> None:
        await published.listen(MessageBounced)
        email = address()
        long_ago = utc_now() - timedelta(days=45)
        soft = {"bounce_type": "Transient", "subtype": "MailboxFull"}
        await post(
            bounce,
            sns_host,
            ses_notification("Bounce", provider_message_id="a", email=email, at=long_ago, **soft),
        )
        for _ in range(2):
            await post(
                bounce, sns_host, ses_notification("Bounce", provider_message_id="b", email=email, **soft)
            )
        assert await suppressed(bounce, email) == []

        await post(
            bounce,
            sns_host,
            ses_notification(
                "Bounce", provider_message_id="c", email=email, headers=our_headers(unique_id(), 1), **soft
            ),
        )

        [entry] = await suppressed(bounce, email)
        assert (entry["reason"], entry["diagnostic"]) == ("soft_bounce", "smtp; 550 5.1.1 user unknown")
        [bounced] = await published.about(MessageBounced, email)
        assert (bounced.kind, bounced.subtype) == ("transient", "MailboxFull")

    async def test_an_address_an_admin_released_counts_its_soft_bounces_afresh(
        self, bounce: Bounce, sns_host: SnsHost
    ) -> None:
        email = address()
        soft = {"bounce_type": "Transient", "subtype": "MailboxFull"}
        for _ in range(3):
            await post(
                bounce, sns_host, ses_notification("Bounce", provider_message_id="s", email=email, **soft)
            )
        assert [e["reason"] for e in await suppressed(bounce, email)] == ["soft_bounce"]
        # The mailbox was emptied and an admin takes the address off the list.
        assert (await bounce.http.delete(f"/api/v1/suppressions/{email}")).status_code == 204

        # The bounces before the release are not held against it again; new ones are.
        for _ in range(2):
            await post(
                bounce, sns_host, ses_notification("Bounce", provider_message_id="t", email=email, **soft)
            )
        assert await suppressed(bounce, email) == []
        await post(bounce, sns_host, ses_notification("Bounce", provider_message_id="u", email=email, **soft))
        assert [e["reason"] for e in await suppressed(bounce, email)] == ["soft_bounce"]

    async def test_an_address_is_suppressed_once_with_its_first_reason(
        self, bounce: Bounce, sns_host: SnsHost, published: Published
    ) -> None:
        await published.listen(AddressSuppressed)
        email = address()

        await post(bounce, sns_host, ses_notification("Bounce", provider_message_id="a", email=email.upper()))
        await post(bounce, sns_host, ses_notification("Bounce", provider_message_id="b", email=email))

        [entry] = await suppressed(bounce, email)
        assert entry["reason"] == "bounce"
        assert len(await published.about(AddressSuppressed, email)) == 1


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"sns:{password}".encode()).decode()


class TestRawDelivery:
    def request(self, email: str, password: str = RAW_SECRET, topic: str = TOPIC) -> dict[str, Any]:
        return {
            "content": json.dumps(ses_notification("Bounce", provider_message_id="raw", email=email)),
            "headers": {
                "authorization": basic(password),
                "x-amz-sns-topic-arn": topic,
                "x-amz-sns-message-id": f"raw-{email}",
            },
        }

    async def test_with_the_shared_secret_it_is_acted_on_once(self, bounce: Bounce) -> None:
        email = address()

        for _ in range(2):
            response = await bounce.http.post("/sns/raw", **self.request(email))
            assert response.status_code == 204

        assert len(await bounce.fetch("SELECT * FROM feedback WHERE email = $1", email)) == 1
        assert len(await suppressed(bounce, email)) == 1

    @pytest.mark.parametrize(("password", "topic"), [("wrong", TOPIC), (RAW_SECRET, OTHER_TOPIC)])
    async def test_without_the_secret_or_from_another_topic_it_is_refused(
        self, bounce: Bounce, password: str, topic: str
    ) -> None:
        email = address()

        response = await bounce.http.post("/sns/raw", **self.request(email, password, topic))

        assert response.status_code == 403
        assert await bounce.fetch("SELECT * FROM feedback WHERE email = $1", email) == []

    async def test_without_credentials_it_is_refused(self, bounce: Bounce) -> None:
        response = await bounce.http.post("/sns/raw", content=b"{}")

        assert response.status_code == 403


class TestSuppressionsApi:
    async def test_lists_by_filter_in_keyset_pages_and_removes(
        self, bounce: Bounce, sns_host: SnsHost, published: Published
    ) -> None:
        await published.listen(AddressUnsuppressed)
        marker = address().split("@")[0]
        emails = [f"{marker}.{n}@example.com" for n in range(3)]
        for email in emails:
            await post(bounce, sns_host, ses_notification("Bounce", provider_message_id="x", email=email))
        await post(
            bounce,
            sns_host,
            ses_notification("Complaint", provider_message_id="x", email=f"{marker}.c@example.com"),
        )

        first = (
            await bounce.http.get(
                "/api/v1/suppressions", params={"email": marker.upper(), "reason": "bounce", "limit": 2}
            )
        ).json()
        second = (
            await bounce.http.get(
                "/api/v1/suppressions",
                params={"email": marker, "reason": "bounce", "limit": 2, "before": first["next"]},
            )
        ).json()

        assert [i["email"] for i in first["items"] + second["items"]] == emails[::-1]
        assert second["next"] is None
        assert first["items"][0]["reason"] == "bounce"

        response = await bounce.http.delete(f"/api/v1/suppressions/{emails[0].upper()}")

        assert response.status_code == 204
        assert await suppressed(bounce, emails[0]) == []
        await published.about(AddressUnsuppressed, emails[0])

    async def test_removing_an_address_not_on_the_list_is_404(self, bounce: Bounce) -> None:
        response = await bounce.http.delete(f"/api/v1/suppressions/{address()}")

        assert response.status_code == 404

    async def test_a_bad_filter_is_422(self, bounce: Bounce) -> None:
        response = await bounce.http.get("/api/v1/suppressions", params={"reason": "nope"})

        assert response.status_code == 422
