"""SES identity status of sender addresses, read through aioboto3 from moto's server: verified by
the address or by its domain, or not; a send from an unverified identity is refused, saying why."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import aioboto3
import httpx
import pytest

from tests.aws import moto_server

pytestmark = pytest.mark.connected


@pytest.fixture(autouse=True)
def _as_a_service(api: httpx.AsyncClient) -> None:
    """The admin endpoints answer administrators: the internal service token is one."""
    settings = api.app.state.runtime.settings  # type: ignore[attr-defined]
    api.headers["Authorization"] = f"Bearer {settings.CAMPAIGN_API_TOKEN}"


PUBLIC = "http://test/public/v1"


@pytest.fixture(scope="module")
def aws_url() -> Iterator[str]:
    yield from moto_server()


async def _ses_account(api: httpx.AsyncClient, aws_url: str) -> int:
    account = await api.post(
        "/accounts",
        json={
            "name": f"SES {uuid.uuid4().hex[:8]}",
            "transport": "ses",
            "ses": {
                "region": "us-east-1",
                "access_key_id": "testing",
                "secret_access_key": "testing",
                "endpoint_url": aws_url,
            },
        },
    )
    assert account.status_code == 201, account.text
    return int(account.json()["account_id"])


async def _sender(api: httpx.AsyncClient, account_id: int, email: str) -> dict[str, Any]:
    sender = await api.post(
        "/sender-addresses", json={"account_id": account_id, "name": "Polo", "email": email}
    )
    assert sender.status_code == 201, sender.text
    return dict(sender.json())


async def test_identity_status_by_address_or_domain_and_unverified_sends_refused(
    api: httpx.AsyncClient, aws_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    session = aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    async with session.client("ses", endpoint_url=aws_url) as ses:
        await ses.verify_email_identity(EmailAddress=f"avisos@{tag}-address.example")
        await ses.verify_domain_identity(Domain=f"{tag}-domain.example")
    account_id = await _ses_account(api, aws_url)
    by_address = await _sender(api, account_id, f"avisos@{tag}-address.example")
    by_domain = await _sender(api, account_id, f"qualquer@{tag}-domain.example")
    unverified = await _sender(api, account_id, f"ninguem@{tag}-nowhere.example")

    async def identity(sender: dict[str, Any]) -> dict[str, Any]:
        response = await api.get(f"/sender-addresses/{sender['sender_address_id']}/identity")
        assert response.status_code == 200, response.text
        return dict(response.json()["identity"])

    assert (await identity(by_address)) | {"region": None} == {
        "email": by_address["email"],
        "transport": "ses",
        "status": "verified",
        "identity": by_address["email"],
        "region": None,
    }
    assert (await identity(by_domain))["identity"] == f"{tag}-domain.example"
    assert (await identity(by_domain))["status"] == "verified"
    assert (await identity(unverified))["status"] == "not_verified"

    key = await api.post(
        "/api-keys",
        json={
            "system": f"polo-{tag}",
            "name": "portal",
            "sender_address_ids": [s["sender_address_id"] for s in (by_address, by_domain, unverified)],
        },
    )
    headers = {"Authorization": f"Bearer {key.json()['token']}"}
    senders = (await api.get(f"{PUBLIC}/senders", headers=headers)).json()
    assert {s["email"]: s["identity"]["status"] for s in senders} == {
        by_address["email"]: "verified",
        by_domain["email"]: "verified",
        unverified["email"]: "not_verified",
    }

    def body(sender: str) -> dict[str, Any]:
        return {
            "recipients": [{"email": "ana@example.org"}],
            "subject": "Oi",
            "html": "<p>Oi</p>",
            "sender": sender,
        }

    refused = await api.post(
        f"{PUBLIC}/sends", json=body(unverified["email"]), headers=headers | {"Idempotency-Key": "u"}
    )
    assert refused.status_code == 422 and refused.json()["code"] == "unverified_sender"
    assert "not verified in Amazon SES" in refused.json()["detail"]
    for sender in (by_address, by_domain):
        accepted = await api.post(
            f"{PUBLIC}/sends",
            json=body(sender["email"]),
            headers=headers | {"Idempotency-Key": sender["email"]},
        )
        assert accepted.status_code == 201, accepted.text


async def test_an_smtp_sender_is_not_applicable(api: httpx.AsyncClient) -> None:
    account = await api.post(
        "/accounts",
        json={
            "name": f"SMTP {uuid.uuid4().hex[:8]}",
            "transport": "smtp",
            "smtp": {"host": "smtp.example", "port": 587},
        },
    )
    sender = await _sender(api, account.json()["account_id"], f"{uuid.uuid4().hex[:8]}@smtp.example")
    shown = (await api.get(f"/sender-addresses/{sender['sender_address_id']}/identity")).json()
    assert shown["identity"]["status"] == "not_applicable"


async def test_ses_away_is_reported_not_crashed(api: httpx.AsyncClient) -> None:
    account_id = await _ses_account(api, "http://127.0.0.1:9")
    sender = await _sender(api, account_id, f"{uuid.uuid4().hex[:8]}@away.example")
    shown = (await api.get(f"/sender-addresses/{sender['sender_address_id']}/identity")).json()
    assert shown["identity"] is None and "not readable" in shown["identity_error"]


async def test_a_campaign_from_an_unverified_ses_sender_does_not_start(
    api: httpx.AsyncClient, aws_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    account_id = await _ses_account(api, aws_url)
    sender = await _sender(api, account_id, f"boletim@{tag}-later.example")
    draft = {
        "name": "Boletim",
        "sender_address_id": sender["sender_address_id"],
        "group_ids": [1],
        "subject": "Oi",
        "html": "<p>Oi</p>",
    }
    campaign = await api.post("/campaigns", json=draft)
    path = f"/campaigns/{campaign.json()['campaign_id']}"

    refused = await api.post(f"{path}/start")

    assert refused.status_code == 409
    assert "not verified in Amazon SES" in refused.json()["detail"]
    assert (await api.get(path)).json()["status"] == "draft"
    session = aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    async with session.client("ses", endpoint_url=aws_url) as ses:
        await ses.verify_domain_identity(Domain=f"{tag}-later.example")
    assert (await api.post(f"{path}/start")).status_code == 202
