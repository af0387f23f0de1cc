"""The reputation brake in the running service: accounts and counted events arrive over the real
broker (a vhost of each test's own), the brake's clock is the test's, and the pauses and resumes
it announces are read back from the broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aio_pika
import aioboto3
import httpx
import pytest

from services.bounce.app import create_app
from services.bounce.brake_api import brake_of
from services.bounce.brake_loop import LOCK_KEY
from services.bounce.reputation_repository import ReputationRepository
from services.bounce.settings import BounceSettings
from shared.broker import publish_event
from shared.contracts import AccountResumed, Event, SesConnection, topology, utc_now
from shared.crypto import SecretBox
from shared.service import Runtime
from tests.aws import moto_server
from tests.bounce.support import RAW_SECRET, TOPIC, address, sent, ses_notification
from tests.bounce.test_brake_repository import bounced, complained, configured
from tests.support import Handled, eventually, running, unique_id

pytestmark = pytest.mark.connected


@dataclass
class Clock:
    """The brake's clock: the real time, moved forward by the test."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return utc_now() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@dataclass
class Brake:
    """The bounce service with its brake, and what it announced about accounts."""

    app: Any
    api: httpx.AsyncClient
    handled: Handled
    clock: Clock
    announced: list[tuple[str, dict[str, Any]]]

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def feed(self, *events: Event) -> None:
        """Publish the events as their producers do; return once bounce handled each."""
        for event in events:
            await publish_event(self.runtime.broker, event)
        for event in events:
            assert await self.handled.wait_for(str(event.event_id)) == [None]

    async def poll(self) -> None:
        """One poll of the brake, published: the outbox is empty when it returns."""
        # A poll the service started itself (nudged by an override) may hold the lock a moment.
        await eventually(brake_of(self.runtime).poll, within=10)
        await self.runtime.relay.drain()

    def events(self, routing_key: str, account_id: int) -> list[dict[str, Any]]:
        """What the brake announced under `routing_key` about the account so far."""
        return [
            body for key, body in self.announced if key == routing_key and body["account_id"] == account_id
        ]

    async def announcement(self, routing_key: str, account_id: int) -> dict[str, Any]:
        """The first announcement under `routing_key` about the account, once it arrived."""

        async def arrived() -> list[dict[str, Any]]:
            return self.events(routing_key, account_id)

        return (await eventually(arrived))[0]

    async def history(self, account_id: int) -> list[dict[str, Any]]:
        """The account's reputation as the console reads it."""
        response = await self.api.get(f"/api/v1/accounts/{account_id}/reputation", params={"hours": 48})
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["history"]
        return rows


@asynccontextmanager
async def _listening(url: str, announced: list[tuple[str, dict[str, Any]]]) -> AsyncIterator[None]:
    connection = await aio_pika.connect(url)
    try:
        queue = await (await connection.channel()).declare_queue(exclusive=True)
        for routing_key in ("account.paused", "account.resumed"):
            await queue.bind(topology.EVENTS.name, routing_key=routing_key)

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            announced.append((message.routing_key or "", json.loads(message.body)))

        await queue.consume(keep, no_ack=True)
        yield
    finally:
        await connection.close()


StartBrake = Callable[..., AbstractAsyncContextManager[Brake]]


@pytest.fixture
def start_brake(make_settings: Callable[..., Any], own_vhost: str) -> StartBrake:
    """Starts the service on the test's own vhost; by default the brake polls only when told."""

    @asynccontextmanager
    async def start(poll_seconds: float = 3600, **overrides: Any) -> AsyncIterator[Brake]:
        clock = Clock()
        settings = make_settings(
            BounceSettings,
            RABBITMQ_URL=own_vhost,
            REPUTATION_POLL_SECONDS=poll_seconds,
            REPUTATION_MIN_SENDS=10,
            **overrides,
        )
        app = create_app(settings, clock=clock)
        handled = Handled()
        app.state.runtime.broker.add_middleware(handled.middleware())
        announced: list[tuple[str, dict[str, Any]]] = []
        async with running(app) as api, _listening(own_vhost, announced):
            yield Brake(app, api, handled, clock, announced)

    return start


@pytest.fixture
async def brake(start_brake: StartBrake) -> AsyncIterator[Brake]:
    """The service, its brake polled by the test."""
    async with start_brake() as service:
        yield service


async def _over_the_bounce_threshold(brake: Brake, **account: Any) -> int:
    """An SMTP account with 10 sends and 1 hard bounce (10 %), polled once: paused."""
    account_id = unique_id()
    await brake.feed(
        configured(account_id, transport="smtp", ses=None, bounce_control=False, **account),
        *(sent(account_id=account_id) for _ in range(10)),
        bounced(account_id),
        bounced(account_id, "transient"),
    )
    await brake.poll()
    await brake.announcement("account.paused", account_id)
    return account_id


async def _nothing_more_arrives() -> None:
    # The outbox was drained before: what was published reaches the listener within this.
    await asyncio.sleep(0.5)


class TestCountedRates:
    async def test_a_rate_over_the_threshold_pauses_once_until_the_pause_length(self, brake: Brake) -> None:
        before = brake.clock()
        account_id = await _over_the_bounce_threshold(brake, pause_hours=2)
        after = brake.clock()

        await brake.poll()
        await _nothing_more_arrives()

        [paused] = brake.events("account.paused", account_id)
        assert paused["source"] == "bounce"
        assert paused["reason"] == "reputation brake (counters): bounce rate 10.00% >= 5.00%"
        assert (
            before + timedelta(hours=2)
            <= datetime.fromisoformat(paused["until"])
            <= after + timedelta(hours=2)
        )
        label = {"account_id": str(account_id)}
        assert brake.runtime.registry.get_sample_value("mailer_account_bounce_rate", label) == 0.1
        assert brake.runtime.registry.get_sample_value("mailer_account_brake_paused", label) == 1

    async def test_resumes_only_after_the_pause_and_once_the_rate_is_back_under(self, brake: Brake) -> None:
        account_id = await _over_the_bounce_threshold(brake, pause_hours=2)

        brake.clock.advance(hours=3)
        await brake.poll()
        await _nothing_more_arrives()
        assert brake.events("account.resumed", account_id) == []

        await brake.feed(*(sent(account_id=account_id) for _ in range(90)))
        brake.clock.advance(minutes=5)
        await brake.poll()

        resumed = await brake.announcement("account.resumed", account_id)
        assert (resumed["source"], resumed["reason"]) == (
            "bounce",
            "reputation brake: pause ended and rates are under the thresholds",
        )
        history = await brake.history(account_id)
        assert [(row["bounce_rate"], row["sent"], row["paused"]) for row in history] == [
            (0.1, 10, True),
            (0.1, 10, True),
            (0.01, 100, False),
        ]

    async def test_no_resume_before_the_pause_ends_though_the_rate_is_back_under(self, brake: Brake) -> None:
        account_id = await _over_the_bounce_threshold(brake, pause_hours=2)
        await brake.feed(*(sent(account_id=account_id) for _ in range(90)))

        brake.clock.advance(hours=1, minutes=59)
        await brake.poll()
        await _nothing_more_arrives()
        assert brake.events("account.resumed", account_id) == []

        brake.clock.advance(minutes=1)
        await brake.poll()
        await brake.announcement("account.resumed", account_id)

    async def test_complaints_pause_too(self, brake: Brake) -> None:
        account_id = unique_id()
        await brake.feed(
            configured(account_id, transport="smtp", ses=None, complaint_threshold=0.1),
            *(sent(account_id=account_id) for _ in range(10)),
            complained(account_id),
        )

        await brake.poll()

        paused = await brake.announcement("account.paused", account_id)
        assert "complaint rate 10.000% >= 10.000%" in paused["reason"]

    async def test_too_few_sends_are_not_judged(self, brake: Brake) -> None:
        account_id = unique_id()
        await brake.feed(
            configured(account_id, transport="smtp", ses=None),
            *(sent(account_id=account_id) for _ in range(9)),
            *(bounced(account_id) for _ in range(9)),
        )

        await brake.poll()
        await _nothing_more_arrives()

        assert brake.events("account.paused", account_id) == []
        [row] = await brake.history(account_id)
        assert (row["source"], row["bounce_rate"], row["sent"], row["paused"]) == ("counters", None, 9, False)


class TestResumedByAnOperator:
    async def test_the_brake_judges_it_again_and_pauses_it_while_the_rate_is_over(self, brake: Brake) -> None:
        account_id = await _over_the_bounce_threshold(brake)

        await brake.feed(AccountResumed(account_id=account_id, reason="go on", source="operator"))
        await brake.poll()

        await eventually(lambda: _count(brake, "account.paused", account_id, 2))

    async def test_a_resume_older_than_the_pause_changes_nothing(self, brake: Brake) -> None:
        before = brake.clock() - timedelta(minutes=1)
        account_id = await _over_the_bounce_threshold(brake)

        await brake.feed(
            AccountResumed(account_id=account_id, reason="late", source="operator", occurred_at=before)
        )
        await brake.poll()
        await _nothing_more_arrives()

        assert len(brake.events("account.paused", account_id)) == 1


class TestOneReplica:
    async def test_a_replica_that_finds_the_brake_locked_skips_the_poll_and_shows_no_rates(
        self, brake: Brake
    ) -> None:
        account_id = await _over_the_bounce_threshold(brake)
        label = {"account_id": str(account_id)}
        assert brake.runtime.registry.get_sample_value("mailer_account_brake_paused", label) == 1

        async with brake.runtime.pool.acquire() as other_replica, other_replica.transaction():
            assert await ReputationRepository(other_replica).try_lock(LOCK_KEY)
            assert not await brake_of(brake.runtime).poll()

        assert brake.runtime.registry.get_sample_value("mailer_account_brake_paused", label) is None


class TestOverride:
    async def test_an_override_lifts_the_pause_and_holds_the_brake_until_switched_off(
        self, brake: Brake
    ) -> None:
        account_id = await _over_the_bounce_threshold(brake)
        path = f"/api/v1/accounts/{account_id}/brake-override"

        response = await brake.api.post(path, json={"by": "admin@example.org", "reason": "lista revisada"})
        assert response.status_code == 201, response.text
        assert response.json()["set_by"] == "admin@example.org"

        # The override nudges the brake: no poll of the test's is needed for the resume.
        resumed = await brake.announcement("account.resumed", account_id)
        assert resumed["reason"] == "reputation brake overridden by admin@example.org"
        await brake.poll()
        await _nothing_more_arrives()
        assert len(brake.events("account.paused", account_id)) == 1

        assert (await brake.api.delete(path, params={"by": "admin@example.org"})).status_code == 204
        await brake.poll()
        await eventually(lambda: _count(brake, "account.paused", account_id, 2))
        assert (await brake.api.delete(path, params={"by": "admin@example.org"})).status_code == 404

    async def test_an_override_until_a_date_ends_by_itself(self, brake: Brake) -> None:
        account_id = await _over_the_bounce_threshold(brake, pause_hours=1)
        until = brake.clock() + timedelta(hours=5)
        path = f"/api/v1/accounts/{account_id}/brake-override"
        response = await brake.api.post(path, json={"by": "ana", "until": until.isoformat()})
        assert response.status_code == 201
        await brake.announcement("account.resumed", account_id)

        brake.clock.advance(hours=5)
        await brake.poll()

        await eventually(lambda: _count(brake, "account.paused", account_id, 2))

    async def test_an_unknown_account_or_a_bad_body_is_refused(self, brake: Brake) -> None:
        unknown = f"/api/v1/accounts/{unique_id()}/brake-override"
        assert (await brake.api.post(unknown, json={"by": "ana"})).status_code == 404
        path = f"/api/v1/accounts/{await _over_the_bounce_threshold(brake)}/brake-override"
        past = (brake.clock() - timedelta(minutes=1)).isoformat()
        for body, at_fault in (
            ({"until": "2030-01-01T00:00:00Z"}, "by"),
            ({"by": "ana", "until": "2030-01-01T00:00:00"}, "until"),
            ({"by": "ana", "until": past}, "until"),
        ):
            response = await brake.api.post(path, json=body)
            assert response.status_code == 422, body
            assert response.json()["detail"][0]["loc"][-1] == at_fault


async def _count(brake: Brake, routing_key: str, account_id: int, expected: int) -> bool:
    return len(brake.events(routing_key, account_id)) == expected


@pytest.fixture(scope="module")
def aws_url() -> Iterator[str]:
    """moto's server, holding the CloudWatch metrics of this module's accounts."""
    yield from moto_server()


async def _ses_rates(
    brake: Brake, aws_url: str, region: str, bounce: float, complaint: float
) -> SesConnection:
    """An SES account of its own region whose CloudWatch shows these rates (and older ones before)."""
    session = aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
    )
    now = utc_now()
    async with session.client("cloudwatch", endpoint_url=aws_url) as cloudwatch:
        await cloudwatch.put_metric_data(
            Namespace="AWS/SES",
            MetricData=[
                {"MetricName": "Reputation.BounceRate", "Value": 0.5, "Timestamp": now - timedelta(hours=2)},
                {
                    "MetricName": "Reputation.BounceRate",
                    "Value": bounce,
                    "Timestamp": now - timedelta(minutes=1),
                },
                {"MetricName": "Reputation.ComplaintRate", "Value": complaint, "Timestamp": now},
            ],
        )
    return SesConnection(
        region=region,
        access_key_id="testing",
        secret_access_key_encrypted=SecretBox(brake.runtime.settings.SECRET_KEYS).encrypt("testing"),
        endpoint_url=aws_url,
    )


class TestCloudWatch:
    async def test_the_loop_pauses_by_the_latest_ses_rates_once_and_spares_an_account_under(
        self, start_brake: StartBrake, aws_url: str
    ) -> None:
        over, under = unique_id(), unique_id()
        async with start_brake(poll_seconds=0.2) as brake:
            await brake.feed(
                configured(
                    over, ses=await _ses_rates(brake, aws_url, "sa-east-1", bounce=0.06, complaint=0.0)
                ),
                configured(
                    under, ses=await _ses_rates(brake, aws_url, "eu-west-1", bounce=0.01, complaint=0.0005)
                ),
            )

            paused = await brake.announcement("account.paused", over)
            assert paused["reason"] == "reputation brake (cloudwatch): bounce rate 6.00% >= 5.00%"

            async def polled_again() -> bool:
                return len(await brake.history(over)) >= 3 and len(await brake.history(under)) >= 3

            await eventually(polled_again)
            await _nothing_more_arrives()

            assert len(brake.events("account.paused", over)) == 1
            assert brake.events("account.paused", under) == []
            latest = (await brake.history(under))[-1]
            assert (latest["source"], latest["bounce_rate"], latest["complaint_rate"]) == (
                "cloudwatch",
                0.01,
                0.0005,
            )


class TestFeedbackToPause:
    async def test_ses_bounces_received_over_sns_pause_the_account_and_it_resumes_after_the_pause(
        self, start_brake: StartBrake
    ) -> None:
        account_id = unique_id()
        messages = [sent(account_id=account_id, email=address()) for _ in range(10)]
        async with start_brake(
            SNS_TOPIC_ACCOUNTS={TOPIC: account_id}, SNS_RAW_DELIVERY_SECRET=RAW_SECRET
        ) as brake:
            await brake.feed(configured(account_id, transport="smtp", ses=None, pause_hours=24), *messages)

            bounce = ses_notification(
                "Bounce", provider_message_id=messages[0].provider_message_id, email=messages[0].email
            )
            response = await brake.api.post(
                "/sns/raw",
                content=json.dumps(bounce),
                auth=("sns", RAW_SECRET),
                headers={"x-amz-sns-topic-arn": TOPIC, "x-amz-sns-message-id": f"raw-{account_id}"},
            )
            assert response.status_code == 204

            async def paused() -> list[dict[str, Any]]:
                # The bounce reaches the counts through the broker: poll until it is counted.
                await brake.poll()
                return brake.events("account.paused", account_id)

            [pause] = await eventually(paused)
            assert "bounce rate 10.00%" in pause["reason"]

            # A day later the window that paused it is over and nothing was sent since.
            brake.clock.advance(hours=24, seconds=1)
            await brake.poll()
            await brake.announcement("account.resumed", account_id)
