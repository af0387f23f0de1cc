"""SES feedback polled from SQS, for accounts whose feedback topic delivers to a queue.

Each configured queue is long-polled with its own credentials and region. A message is deleted
only after its notification is committed, so a crash means a redelivery, which the MessageId
record absorbs. The queue's access policy is what proves the sender here (only the account's
SNS topic may send to it), so the SNS signature is not checked again. A message that cannot be
read stays in the queue: the queue's redrive policy moves it to its dead-letter queue after its
receive count, where an operator sees it; nothing is silently dropped.

Both shapes SNS puts on a queue are read: the SNS envelope (its MessageId identifies the
notification) and raw message delivery (the SES notification itself, identified by the SQS
MessageId, which SQS keeps across redeliveries of one message).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aioboto3

from services.bounce import ingest as feedback_ingest
from services.bounce import notifications
from services.bounce.settings import BounceSettings, SqsQueue
from services.bounce.sns import Malformed
from shared.service import Runtime

log = logging.getLogger(__name__)

# SQS's longest wait: one request per 20 s on an idle queue.
_WAIT_SECONDS = 20
_BATCH = 10
_MAX_BACKOFF_SECONDS = 60.0


def read_message(queue: SqsQueue, message: dict[str, Any]) -> tuple[feedback_ingest.Source, str]:
    """The source and the SES notification (JSON text) of one SQS message; Malformed if neither
    an SNS envelope nor an SES notification."""
    try:
        document = json.loads(message["Body"])
    except (KeyError, json.JSONDecodeError, RecursionError):
        raise Malformed("SQS message body is not JSON") from None
    if isinstance(document, dict) and document.get("Type") == "Notification":
        inner = document.get("Message")
        message_id, topic_arn = document.get("MessageId"), document.get("TopicArn")
        if not isinstance(message_id, str) or not isinstance(topic_arn, str):
            raise Malformed("SNS envelope without MessageId or TopicArn")
        # Real SNS sends the notification as JSON text; moto as a decoded object.
        payload = inner if isinstance(inner, str) else json.dumps(inner)
        return feedback_ingest.Source(message_id, topic_arn, queue.account_id), payload
    return feedback_ingest.Source(message["MessageId"], queue.queue_url, queue.account_id), message["Body"]


async def _handle(runtime: Runtime, queue: SqsQueue, message: dict[str, Any]) -> bool:
    """Ingest one message; True when it may be deleted."""
    try:
        source, payload = read_message(queue, message)
        await feedback_ingest.receive(runtime, source, notifications.parse_notification(payload), payload)
    except Malformed as error:
        log.warning("sqs message refused", extra={"reason": error.reason, "queue_url": queue.queue_url})
        return False
    return True


async def poll(runtime: Runtime, queue: SqsQueue) -> None:
    """Long-poll one queue until cancelled, backing off while SQS or the database is away."""
    session = aioboto3.Session(
        aws_access_key_id=queue.access_key_id,
        aws_secret_access_key=queue.secret_access_key.get_secret_value() if queue.secret_access_key else None,
        region_name=queue.region,
    )
    delay = 1.0
    while True:
        try:
            async with session.client("sqs", endpoint_url=queue.endpoint_url) as sqs:
                while True:
                    answer = await sqs.receive_message(
                        QueueUrl=queue.queue_url, MaxNumberOfMessages=_BATCH, WaitTimeSeconds=_WAIT_SECONDS
                    )
                    for message in answer.get("Messages", []):
                        if await _handle(runtime, queue, message):
                            await sqs.delete_message(
                                QueueUrl=queue.queue_url, ReceiptHandle=message["ReceiptHandle"]
                            )
                    delay = 1.0
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning(
                "sqs polling failed; retrying",
                extra={"queue_url": queue.queue_url, "delay_s": delay},
                exc_info=True,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_SECONDS)


async def poll_queues(runtime: Runtime) -> None:
    """Poll every configured queue (none: return at once)."""
    settings = runtime.settings
    assert isinstance(settings, BounceSettings)
    await asyncio.gather(*(poll(runtime, queue) for queue in settings.SQS_QUEUES))
