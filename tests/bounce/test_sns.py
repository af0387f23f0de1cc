"""SNS messages are acted on only when SNS provably sent them from a configured topic: signature
checks with a locally made certificate served over https, certificate host rules, replays."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from services.bounce.settings import AWS_SNS_HOST_PATTERN
from services.bounce.sns import (
    CertificateCache,
    Malformed,
    Refused,
    SnsVerifier,
    check_certificate_url,
    parse_envelope,
)
from shared.contracts import utc_now
from tests.bounce.signing import CERT_PATH, CONFIRM_PATH, SnsHost
from tests.bounce.support import OTHER_TOPIC, TOPIC, Bounce, address, ses_notification, sns_fields

pytestmark = pytest.mark.connected


def delivery_fields() -> dict[str, str]:
    return sns_fields(ses_notification("Delivery", provider_message_id="not-ours", email=address()))


async def stored(bounce: Bounce, message_id: str) -> int:
    [row] = await bounce.fetch("SELECT count(*) FROM notifications WHERE message_id = $1", message_id)
    count: int = row[0]
    return count


class TestCertificateUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc123.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc123.pem",
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService.pem",
        ],
    )
    def test_sns_certificates_are_accepted(self, url: str) -> None:
        check_certificate_url(url, AWS_SNS_HOST_PATTERN)

    @pytest.mark.parametrize(
        "url",
        [
            "https://sns.evil.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-abc.pem",
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com@evil.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
            "https://s3.amazonaws.com/bucket/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com/bucket/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?x=1",
            "https://sns.us-east-1.amazonaws.com/other.pem",
            "file:///etc/ssl/cert.pem",
        ],
    )
    def test_anything_else_is_refused(self, url: str) -> None:
        with pytest.raises(Refused):
            check_certificate_url(url, AWS_SNS_HOST_PATTERN)

    async def test_a_refused_url_is_never_fetched(self, sns_host: SnsHost) -> None:
        fetched: list[str] = []

        async def fetch(url: str) -> bytes:
            fetched.append(url)
            return sns_host.pem

        verifier = SnsVerifier(
            topics={TOPIC},
            host_pattern=AWS_SNS_HOST_PATTERN,
            max_age=timedelta(hours=1),
            certificates=CertificateCache(fetch),
        )
        for url in ("https://sns.evil.com/SimpleNotificationService-a.pem", sns_host.cert_url):
            with pytest.raises(Refused):
                await verifier.verify(parse_envelope(sns_host.sign(delivery_fields(), cert_url=url)))
        assert fetched == []


class TestEnvelope:
    def test_a_message_without_a_signature_is_refused_as_unsigned(self) -> None:
        with pytest.raises(Refused, match="unsigned"):
            parse_envelope(delivery_fields())

    @pytest.mark.parametrize("body", [[], "x", {"Type": "Other"}, {"Type": "Notification"}])
    def test_a_body_that_is_no_sns_message_is_malformed(self, body: object) -> None:
        with pytest.raises(Malformed):
            parse_envelope(body)

    def test_a_field_of_the_wrong_type_is_malformed(self, sns_host: SnsHost) -> None:
        with pytest.raises(Malformed):
            parse_envelope(sns_host.sign(delivery_fields()) | {"MessageId": 12})


class TestSnsEndpoint:
    @pytest.mark.parametrize("version", ["1", "2"])
    async def test_a_genuine_notification_is_stored_and_answered_2xx(
        self, bounce: Bounce, sns_host: SnsHost, version: str
    ) -> None:
        message = sns_host.sign(delivery_fields(), version=version)

        response = await bounce.http.post("/sns", content=json.dumps(message))

        assert response.status_code == 204
        assert await stored(bounce, message["MessageId"]) == 1

    async def test_the_certificate_is_fetched_once_per_url(self, bounce: Bounce, sns_host: SnsHost) -> None:
        path = f"/SimpleNotificationService-{uuid.uuid4().hex}.pem"
        for _ in range(3):
            message = sns_host.sign(delivery_fields(), cert_url=sns_host.base_url + path)
            response = await bounce.http.post("/sns", content=json.dumps(message))
            assert response.status_code == 204

        assert sns_host.requests[path] == 1

    async def test_a_replayed_message_is_acted_on_once(self, bounce: Bounce, sns_host: SnsHost) -> None:
        email = address()
        message = sns_host.sign(sns_fields(ses_notification("Bounce", provider_message_id="x", email=email)))

        for _ in range(2):
            response = await bounce.http.post("/sns", content=json.dumps(message))
            assert response.status_code == 204

        rows = await bounce.fetch("SELECT * FROM feedback WHERE email = $1", email)
        assert len(rows) == 1

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ({"Signature": "AAAA"}, "bad signature"),
            ({"Signature": "not base64!"}, "signature is not base64"),
            ({"Message": json.dumps({"notificationType": "Delivery"})}, "bad signature"),
            ({"SignatureVersion": "3"}, "unknown SignatureVersion"),
        ],
    )
    async def test_a_forged_or_altered_message_is_refused(
        self, bounce: Bounce, sns_host: SnsHost, change: dict[str, str], reason: str
    ) -> None:
        message = sns_host.sign(delivery_fields()) | change

        response = await bounce.http.post("/sns", content=json.dumps(message))

        assert (response.status_code, response.json()["detail"]) == (403, reason)
        assert await stored(bounce, message["MessageId"]) == 0

    async def test_a_message_signed_by_another_key_is_refused(
        self, bounce: Bounce, sns_host: SnsHost
    ) -> None:
        forger = SnsHost()  # its own key; never started, its certificate is not the served one
        message = forger.sign(delivery_fields(), cert_url=sns_host.cert_url)

        response = await bounce.http.post("/sns", content=json.dumps(message))

        assert response.status_code == 403

    async def test_an_unknown_topic_is_refused(self, bounce: Bounce, sns_host: SnsHost) -> None:
        email = address()
        message = sns_host.sign(
            sns_fields(ses_notification("Bounce", provider_message_id="x", email=email), topic=OTHER_TOPIC)
        )

        response = await bounce.http.post("/sns", content=json.dumps(message))

        assert (response.status_code, response.json()["detail"]) == (403, "unknown topic")
        assert await bounce.fetch("SELECT * FROM suppressions WHERE email = $1", email) == []

    async def test_a_stale_message_is_refused(self, bounce: Bounce, sns_host: SnsHost) -> None:
        old = (utc_now() - timedelta(hours=3)).isoformat()
        message = sns_host.sign(delivery_fields() | {"Timestamp": old})

        response = await bounce.http.post("/sns", content=json.dumps(message))

        assert (response.status_code, response.json()["detail"]) == (403, "stale timestamp")

    async def test_a_certificate_url_off_the_sns_hosts_is_refused(
        self, bounce: Bounce, sns_host: SnsHost
    ) -> None:
        url = f"https://sns.us-east-1.amazonaws.com.evil.com{CERT_PATH}"
        message = sns_host.sign(delivery_fields(), cert_url=url)

        response = await bounce.http.post("/sns", content=json.dumps(message))

        assert (response.status_code, response.json()["detail"]) == (
            403,
            "certificate URL is not on an SNS host",
        )

    @pytest.mark.parametrize(
        "body",
        [b"{not json", b"[]", b'{"Type": "Notification"}', "ção".encode("latin-1"), b"[" * 15000],
    )
    async def test_a_malformed_body_is_400(self, bounce: Bounce, body: bytes) -> None:
        response = await bounce.http.post("/sns", content=body)

        assert response.status_code == 400

    async def test_a_notification_that_cannot_be_stored_is_503_for_sns_to_retry(
        self, bounce: Bounce, sns_host: SnsHost
    ) -> None:
        # PostgreSQL refuses NUL in text: the store fails after verification.
        document = ses_notification("Bounce", provider_message_id="x", email="nul\u0000@example.com")
        message = sns_host.sign(sns_fields(document))

        response = await bounce.http.post("/sns", content=json.dumps(message))

        assert response.status_code == 503
        assert await stored(bounce, message["MessageId"]) == 0

    async def test_a_body_over_the_limit_is_413(self, bounce: Bounce) -> None:
        response = await bounce.http.post("/sns", content=b"x" * (17 * 1024))

        assert response.status_code == 413

    async def test_a_notification_that_is_no_ses_feedback_is_400(
        self, bounce: Bounce, sns_host: SnsHost
    ) -> None:
        message = sns_host.sign(sns_fields({"notificationType": "Received", "mail": {"messageId": "m"}}))

        response = await bounce.http.post("/sns", content=json.dumps(message))

        assert response.status_code == 400
        assert await stored(bounce, message["MessageId"]) == 0


def confirmation(
    sns_host: SnsHost, kind: str, topic: str, subscribe_url: str | None = None
) -> dict[str, str]:
    fields = {
        "Type": kind,
        "MessageId": f"confirm-{utc_now().timestamp()}",
        "Token": "2336412f37fb687f5d51e6e2425f004aed8f7f3d",
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.",
        "SubscribeURL": subscribe_url or f"{sns_host.base_url}{CONFIRM_PATH}?Token={kind}-{topic}",
        "Timestamp": utc_now().isoformat(),
    }
    return sns_host.sign(fields)


class TestSubscriptionConfirmation:
    @pytest.mark.parametrize(
        ("kind", "topic", "status", "visits"),
        [
            ("SubscriptionConfirmation", TOPIC, 204, 1),
            ("SubscriptionConfirmation", OTHER_TOPIC, 403, 0),
            ("UnsubscribeConfirmation", TOPIC, 204, 0),
        ],
    )
    async def test_only_a_subscription_to_a_configured_topic_is_confirmed(
        self, bounce: Bounce, sns_host: SnsHost, kind: str, topic: str, status: int, visits: int
    ) -> None:
        message = confirmation(sns_host, kind, topic)
        path = message["SubscribeURL"].removeprefix(sns_host.base_url)

        response = await bounce.http.post("/sns", content=json.dumps(message))

        assert response.status_code == status
        assert sns_host.requests[path] == visits

    async def test_a_subscribe_url_off_the_sns_hosts_is_never_visited(
        self, bounce: Bounce, sns_host: SnsHost
    ) -> None:
        message = confirmation(
            sns_host, "SubscriptionConfirmation", TOPIC, "https://169.254.169.254/latest/meta-data"
        )

        response = await bounce.http.post("/sns", content=json.dumps(message))

        assert (response.status_code, response.json()["detail"]) == (
            403,
            "SubscribeURL is not on an SNS host",
        )
