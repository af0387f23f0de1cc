"""The committed AsyncAPI document (docs/asyncapi.json) is the one the code generates, and it
documents the send contract for other systems."""

from __future__ import annotations

import json

from devtools import asyncapi


def test_the_committed_document_is_current() -> None:
    assert asyncapi.DOCUMENT.read_text() == asyncapi.render(), (
        "docs/asyncapi.json is stale: run `python -m devtools.asyncapi` and commit it"
    )


def test_it_documents_send_requests_and_their_answers() -> None:
    document = json.loads(asyncapi.DOCUMENT.read_text())
    assert document["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {"send.requested", "send.accepted", "send.rejected", "campaign.started"} <= addresses
    payload = document["components"]["schemas"]["SendRequested"]
    assert {"system", "idempotency_key", "recipients", "group_id", "template", "sender"} <= set(
        payload["properties"]
    )
