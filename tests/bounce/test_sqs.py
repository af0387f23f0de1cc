"""SES feedback polled from SQS on moto's server: SNS fan-out (enveloped and raw), redeliveries,
and unreadable messages left for the queue's redrive policy."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aioboto3
import pytest

from services.bounce.app import create_app
from services.bounce.settings import BounceSettings
from tests.aws import moto_server
from tests.bounce.support import address, ses_notification, sns_fields
from tests.support import eventually, running

pytestmark = pytest.mark.connected

ACCOUNT = 11
SESSION = aioboto3.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
)


@dataclass
class Aws:
    url: str
    topic: str
    raw_topic: str
    queues: dict[str, str]

    def client(self, service: str) -> Any:
        return SESSION.client(service, endpoint_url=self.url)

    async def left(self, queue: str) -> int:
        """Messages still in the queue, visible or in flight."""
        async with self.client("sqs") as sqs:
            answer = await sqs.get_queue_attributes(QueueUrl=self.queues[queue], AttributeNames=["All"])
        attributes = answer["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


@pytest.fixture(scope="module")
def aws_url() -> Iterator[str]:
    yield from moto_server()


@pytest.fixture(scope="module")
async def aws(aws_url: str) -> Aws:
    """Two feedback topics on moto, one delivering enveloped to a queue, one raw to another; and
    a third queue for unreadable messages."""
    async with (
        SESSION.client("sns", endpoint_url=aws_url) as sns,
        SESSION.client("sqs", endpoint_url=aws_url) as sqs,
    ):
        queues = {
            name: (await sqs.create_queue(QueueName=name))["QueueUrl"]
            for name in ("enveloped", "raw", "poison")
        }
        topics = [(await sns.create_topic(Name=name))["TopicArn"] for name in ("feedback", "feedback-raw")]
        for topic, queue, raw in ((topics[0], "enveloped", "false"), (topics[1], "raw", "true")):
            arn = (await sqs.get_queue_attributes(QueueUrl=queues[queue], AttributeNames=["QueueArn"]))[
                "Attributes"
            ]["QueueArn"]
            await sns.subscribe(
                TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": raw}
            )
    return Aws(aws_url, topics[0], topics[1], queues)


@pytest.fixture(scope="module")
async def service(make_settings: Callable[..., Any], aws: Aws) -> AsyncIterator[Any]:
    """The bounce service polling the three queues for account ACCOUNT."""
    queues = [
        {
            "queue_url": url,
            "region": "us-east-1",
            "account_id": ACCOUNT,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "endpoint_url": aws.url,
        }
        for url in aws.queues.values()
    ]
    app = create_app(make_settings(BounceSettings, SQS_QUEUES=queues))
    async with running(app):
        yield app.state.runtime


async def feedback_of(runtime: Any, email: str) -> list[Any]:
    async with runtime.pool.acquire() as conn:
        rows: list[Any] = await conn.fetch("SELECT * FROM feedback WHERE email = $1", email)
    return rows


async def suppression_of(runtime: Any, email: str) -> list[Any]:
    async with runtime.pool.acquire() as conn:
        rows: list[Any] = await conn.fetch("SELECT * FROM suppressions WHERE email = $1", email)
    return rows


class TestSqsPolling:
    @pytest.mark.parametrize("raw", [False, True])
    async def test_a_bounce_published_on_the_topic_is_acted_on_and_deleted(
        self, aws: Aws, service: Any, raw: bool
    ) -> None:
        email = address()
        async with aws.client("sns") as sns:
            await sns.publish(
                TopicArn=aws.raw_topic if raw else aws.topic,
                Message=json.dumps(ses_notification("Bounce", provider_message_id="m", email=email)),
            )

        [entry] = await eventually(lambda: suppression_of(service, email))
        assert (entry["reason"], entry["account_id"]) == ("bounce", ACCOUNT)

        async def emptied() -> bool:
            return await aws.left("raw" if raw else "enveloped") == 0

        await eventually(emptied)

    async def test_a_redelivered_notification_is_acted_on_once(self, aws: Aws, service: Any) -> None:
        email = address()
        envelope = sns_fields(
            ses_notification("Complaint", provider_message_id="m", email=email), topic=aws.topic
        )
        async with aws.client("sqs") as sqs:
            for _ in range(2):
                await sqs.send_message(QueueUrl=aws.queues["enveloped"], MessageBody=json.dumps(envelope))

        async def both_handled() -> bool:
            return await aws.left("enveloped") == 0

        await eventually(both_handled)
        assert len(await feedback_of(service, email)) == 1

    async def test_an_unreadable_message_is_left_for_the_redrive_policy(self, aws: Aws, service: Any) -> None:
        email = address()
        async with aws.client("sqs") as sqs:
            await sqs.send_message(QueueUrl=aws.queues["poison"], MessageBody=f"not json {uuid.uuid4()}")
            await sqs.send_message(
                QueueUrl=aws.queues["poison"],
                MessageBody=json.dumps(ses_notification("Bounce", provider_message_id="m", email=email)),
            )

        await eventually(lambda: feedback_of(service, email))

        async def only_the_unreadable_left() -> bool:
            return await aws.left("poison") == 1

        await eventually(only_the_unreadable_left)
