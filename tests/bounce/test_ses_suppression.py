"""The optional mirror into each SES account's own suppression list, on the real broker, with a
recording fake in place of SES v2 (moto does not implement its suppression list)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.bounce.app import create_app
from services.bounce.ses_suppression import SesReason
from services.bounce.settings import BounceSettings
from shared.contracts import AddressSuppressed, AddressUnsuppressed, SesConnection
from tests.bounce.support import Bounce, address
from tests.bounce.test_brake_repository import configured
from tests.support import Handled, running, unique_id

pytestmark = pytest.mark.connected


@dataclass
class RecordingMirror:
    """Records each call by the account's key id; fails every call while `failing`."""

    calls: list[tuple[str, str, str, str]] = field(default_factory=list)
    failing: bool = False

    async def put(self, ses: SesConnection, email: str, reason: SesReason) -> None:
        if self.failing:
            raise OSError("SES away")
        self.calls.append(("put", ses.access_key_id, email, reason))

    async def delete(self, ses: SesConnection, email: str) -> None:
        self.calls.append(("delete", ses.access_key_id, email, ""))


@pytest.fixture(scope="module")
def mirror() -> RecordingMirror:
    return RecordingMirror()


@pytest.fixture(scope="module")
async def mirrored(make_settings: Callable[..., Any], mirror: RecordingMirror) -> AsyncIterator[Bounce]:
    """The bounce service with the mirror on."""
    app = create_app(make_settings(BounceSettings), ses_mirror=mirror)
    handled = Handled()
    app.state.runtime.broker.add_middleware(handled.middleware())
    async with running(app) as client:
        yield Bounce(app, handled, client)


async def an_ses_account(mirrored: Bounce) -> str:
    """Configure an SES account (judged by counts, so no CloudWatch call); its key id."""
    key = f"AKID{unique_id()}"
    event = configured(
        unique_id(),
        bounce_control=False,
        ses=SesConnection(region="us-east-1", access_key_id=key, secret_access_key_encrypted="token"),
    )
    await mirrored.publish(event)
    assert await mirrored.handled.wait_for(str(event.event_id)) == [None]
    return key


class TestMirror:
    async def test_suppressions_and_their_removal_reach_every_ses_account(
        self, mirrored: Bounce, mirror: RecordingMirror
    ) -> None:
        keys = [await an_ses_account(mirrored) for _ in range(2)]
        email = address()
        suppressed, released = (
            AddressSuppressed(email=email, reason="complaint"),
            AddressUnsuppressed(email=email),
        )

        await mirrored.publish(suppressed)
        assert await mirrored.handled.wait_for(str(suppressed.event_id)) == [None]
        await mirrored.publish(released)
        assert await mirrored.handled.wait_for(str(released.event_id)) == [None]

        # Other tests' accounts share the run's database: look at these two only.
        mine = [call for call in mirror.calls if call[2] == email and call[1] in keys]
        assert sorted(mine) == sorted(
            [("put", key, email, "COMPLAINT") for key in keys] + [("delete", key, email, "") for key in keys]
        )

    async def test_a_failed_copy_is_retried(self, mirrored: Bounce, mirror: RecordingMirror) -> None:
        key = await an_ses_account(mirrored)
        email = address()
        event = AddressSuppressed(email=email, reason="soft_bounce")
        mirror.failing = True
        try:
            await mirrored.publish(event)
            [failure] = await mirrored.handled.wait_for(str(event.event_id))
            assert failure is not None and "RetryLater" in failure
        finally:
            mirror.failing = False

        assert (await mirrored.handled.wait_for(str(event.event_id), times=2))[1] is None
        assert ("put", key, email, "BOUNCE") in mirror.calls
