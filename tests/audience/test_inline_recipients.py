"""An API send's inline recipients (carried by campaign.started) resolve like one more group:
after the groups, de-duplicated against them, invalid and suppressed ones counted, their own
personalisation fields kept in the batches."""

from __future__ import annotations

import uuid

import aio_pika
import pytest

from shared.broker import declare_account_queue, publish_event
from shared.contracts import (
    AddressSuppressed,
    CampaignFailed,
    CampaignRecipientsResolved,
    Recipient,
    SendBatch,
    topology,
)
from tests.audience.support import Audience, about, campaign_started, collect, listen_to_events
from tests.support import unique_id

pytestmark = pytest.mark.connected


async def test_inline_recipients_follow_the_groups(
    audience: Audience, channel: aio_pika.abc.AbstractChannel
) -> None:
    tag = uuid.uuid4().hex[:8]
    response = await audience.client.post(
        "/internal/v1/groups",
        json={"name": f"g-{tag}", "members": [{"email": f"ana.{tag}@example.com", "name": "Ana"}]},
    )
    assert response.status_code == 201, response.text
    suppressed = AddressSuppressed(email=f"davi.{tag}@example.com", reason="bounce")
    await publish_event(audience.runtime.broker, suppressed)
    assert await audience.handled.wait_for(str(suppressed.event_id)) == [None]
    account_id = unique_id()
    await declare_account_queue(audience.runtime.broker, account_id)
    queue = await channel.declare_queue(topology.account_queue(account_id).name, passive=True)
    started = campaign_started(account_id, [response.json()["group_id"]]).model_copy(
        update={
            "recipients": [
                Recipient(recipient_id=1, email=f"ANA.{tag}@example.com", name="Ana de novo"),
                Recipient(
                    recipient_id=2,
                    email=f"bruno.{tag}@example.com",
                    name=" Bruno ",
                    fields={"curso": "Física"},
                ),
                Recipient(recipient_id=3, email="sem-arroba", name="X"),
                Recipient(recipient_id=4, email=f"davi.{tag}@example.com"),
            ]
        }
    )
    events = await listen_to_events(
        channel, CampaignRecipientsResolved.routing_key, CampaignFailed.routing_key
    )
    await publish_event(audience.runtime.broker, started)
    [message] = about(
        started.campaign_id, await collect(events, lambda ms: bool(about(started.campaign_id, ms)))
    )

    assert message.routing_key == CampaignRecipientsResolved.routing_key, message.body
    resolved = CampaignRecipientsResolved.model_validate_json(message.body)
    assert (resolved.included, resolved.duplicate, resolved.invalid, resolved.suppressed) == (2, 1, 1, 1)
    batches = [SendBatch.model_validate_json(m.body) for m in await collect(queue, lambda ms: len(ms) >= 1)]
    recipients = [r for b in batches for r in b.recipients]
    assert [(r.email, r.name) for r in recipients] == [
        (f"ana.{tag}@example.com", "Ana"),
        (f"bruno.{tag}@example.com", "Bruno"),
    ]
    assert recipients[1].fields == {"curso": "Física"}
