"""The campaign HTTP API: valid requests work, bad input gets a clear 4xx and changes nothing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from services.campaign.settings import CampaignSettings
from shared.broker import publish_event
from shared.contracts import AccountHeld, utc_now
from shared.crypto import SecretBox
from tests.support import eventually

pytestmark = pytest.mark.connected


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _account(api: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": _unique("conta"),
        "transport": "smtp",
        "smtp": {"host": "smtp.example", "port": 587, "username": "user", "password": "s3nh4-secreta"},
    } | overrides
    response = await api.post("/accounts", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _sender(api: httpx.AsyncClient, account_id: int) -> dict[str, Any]:
    response = await api.post(
        "/sender-addresses",
        json={"account_id": account_id, "name": "Itaú Social", "email": f"{_unique('n')}@ex.org"},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _campaign(api: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    account = await _account(api)
    sender = await _sender(api, account["account_id"])
    body = {
        "name": "Boas-vindas",
        "sender_address_id": sender["sender_address_id"],
        "group_ids": [1, 2],
        "subject": "Olá {{ nome }}",
        "html": "<p>Olá {{ nome }}</p>",
        "priority": 7,
    } | overrides
    response = await api.post("/campaigns", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _fields(response: httpx.Response) -> list[str]:
    return [".".join(map(str, error["loc"][1:])) for error in response.json()["detail"]]


class TestAccounts:
    async def test_the_password_is_stored_encrypted_and_never_shown(self, api: httpx.AsyncClient) -> None:
        account = await _account(api)
        assert account["has_password"] is True
        assert "s3nh4-secreta" not in str(account) and "password" not in account
        runtime = api.app.state.runtime  # type: ignore[attr-defined]
        async with runtime.pool.acquire() as conn:
            stored = await conn.fetchval(
                "SELECT smtp_password_encrypted FROM accounts WHERE account_id = $1", account["account_id"]
            )
        assert "s3nh4-secreta" not in stored
        assert SecretBox(CampaignSettings().SECRET_KEYS).decrypt(stored) == "s3nh4-secreta"
        listed = (await api.get("/accounts")).text
        assert "s3nh4-secreta" not in listed and stored not in listed

    async def test_creation_announces_the_configuration_to_senders(
        self, api: httpx.AsyncClient, events: Any
    ) -> None:
        await events.listen("account.configured")
        account = await _account(api, rate_per_second=3)

        async def announced() -> list[dict[str, Any]]:
            return [e for e in await events("account.configured") if e["account_id"] == account["account_id"]]

        (event,) = await eventually(announced)
        assert event["smtp"]["host"] == "smtp.example"
        assert event["rate_per_second"] == 3 and event["active"] is True
        assert "s3nh4-secreta" not in str(event)

    async def test_an_edit_announces_the_new_settings_and_keeps_the_password(
        self, api: httpx.AsyncClient, events: Any
    ) -> None:
        await events.listen("account.configured")
        account = await _account(api, daily_quota=50_000, max_connections=2)
        assert (account["daily_quota"], account["max_connections"]) == (50_000, 2)
        edited = await api.patch(
            f"/accounts/{account['account_id']}",
            json={
                "rate_per_second": 14,
                "warmup": {"started_on": "2026-11-01", "start_per_day": 200},
                "smtp": {"host": "smtp2.example", "port": 465, "security": "tls", "username": "user"},
            },
        )
        assert edited.status_code == 200, edited.text
        body = edited.json()
        assert (body["rate_per_second"], body["daily_quota"], body["smtp_host"]) == (
            14,
            50_000,
            "smtp2.example",
        )
        assert (body["warmup_start_per_day"], body["warmup_growth_per_day"], body["has_password"]) == (
            200,
            1.5,
            True,
        )
        seen: list[dict[str, Any]] = []

        async def announced() -> bool:
            seen.extend(
                e for e in await events("account.configured") if e["account_id"] == account["account_id"]
            )
            assert len(seen) == 2
            return True

        await eventually(announced)
        latest = seen[-1]
        assert (latest["rate_per_second"], latest["daily_quota"], latest["max_connections"]) == (
            14,
            50_000,
            2,
        )
        assert latest["warmup"] == {"started_on": "2026-11-01", "start_per_day": 200, "growth_per_day": 1.5}
        assert latest["smtp"]["password_encrypted"] == seen[0]["smtp"]["password_encrypted"]

    async def test_an_edit_of_the_other_transport_or_an_unknown_account_is_refused(
        self, api: httpx.AsyncClient
    ) -> None:
        account = await _account(api)
        ses = {"region": "us-east-1", "access_key_id": "AKIA", "secret_access_key": "x"}
        wrong = await api.patch(f"/accounts/{account['account_id']}", json={"ses": ses})
        assert wrong.status_code == 422 and "smtp" in wrong.text
        assert (await api.patch("/accounts/987654321", json={"active": False})).status_code == 404
        assert (
            await api.patch(f"/accounts/{account['account_id']}", json={"max_connections": 0})
        ).status_code == 422

    async def test_a_name_in_use_is_a_conflict(self, api: httpx.AsyncClient) -> None:
        account = await _account(api)
        again = await api.post(
            "/accounts", json={"name": account["name"], "transport": "smtp", "smtp": {"host": "h"}}
        )
        assert again.status_code == 409
        assert "already exists" in again.json()["detail"]

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            ({"name": "x", "transport": "smtp"}, [""]),
            ({"name": "x", "transport": "carrier-pigeon", "smtp": {"host": "h"}}, ["transport"]),
            ({"name": "", "transport": "smtp", "smtp": {"host": "h", "port": 70000}}, ["name", "smtp.port"]),
            ({"name": "x", "transport": "smtp", "smtp": {"host": "h"}, "colour": "blue"}, ["colour"]),
        ],
    )
    async def test_invalid_bodies_name_the_fields_at_fault(
        self, api: httpx.AsyncClient, body: dict[str, Any], fields: list[str]
    ) -> None:
        response = await api.post("/accounts", json=body)
        assert response.status_code == 422
        assert _fields(response) == fields

    async def test_an_operator_pauses_and_resumes_an_account_through_events(
        self, api: httpx.AsyncClient, events: Any
    ) -> None:
        await events.listen("account.paused")
        await events.listen("account.resumed")
        account = await _account(api)
        path = f"/accounts/{account['account_id']}"
        assert (await api.post(f"{path}/pause", json={"reason": "revisão da lista"})).status_code == 202
        assert (await api.post(f"{path}/resume")).status_code == 202

        seen: dict[str, list[dict[str, Any]]] = {"account.paused": [], "account.resumed": []}

        async def announced() -> bool:
            for key, found in seen.items():
                found += [e for e in await events(key) if e["account_id"] == account["account_id"]]
            assert all(seen.values()), seen
            return True

        await eventually(announced)
        (paused,), (resumed,) = seen["account.paused"], seen["account.resumed"]
        assert (paused["source"], paused["reason"]) == ("operator", "revisão da lista")
        assert resumed["source"] == "operator"
        assert (await api.post("/accounts/987654321/pause")).status_code == 404

    async def test_the_account_shows_what_its_senders_report(self, api: httpx.AsyncClient) -> None:
        account = await _account(api)
        path = f"/accounts/{account['account_id']}"
        assert (account["paused"], account["held_until"]) == (False, None)
        await api.post(f"{path}/pause", json={"reason": "revisão da lista"})

        async def shown(paused: bool) -> dict[str, Any]:
            body: dict[str, Any] = (await api.get(path)).json()
            assert body["paused"] is paused
            return body

        paused = await eventually(lambda: shown(True))
        assert paused["pause_reason"] == "revisão da lista"
        until = utc_now() + timedelta(hours=3)
        runtime = api.app.state.runtime  # type: ignore[attr-defined]
        await publish_event(
            runtime.broker, AccountHeld(account_id=account["account_id"], reason="quota", until=until)
        )
        await api.post(f"{path}/resume")
        resumed = await eventually(lambda: shown(False))

        async def held() -> dict[str, Any]:
            body: dict[str, Any] = (await api.get(path)).json()
            assert body["held_reason"] == "quota"
            return body

        assert datetime.fromisoformat((await eventually(held))["held_until"]) == until
        assert resumed["pause_reason"] == "operator"

    async def test_an_unknown_account_is_404(self, api: httpx.AsyncClient) -> None:
        assert (await api.get("/accounts/987654321")).status_code == 404


class TestSenderAddresses:
    async def test_an_unknown_account_is_a_field_error(self, api: httpx.AsyncClient) -> None:
        response = await api.post(
            "/sender-addresses", json={"account_id": 987654321, "name": "x", "email": "a@b.org"}
        )
        assert response.status_code == 422
        assert _fields(response) == ["account_id"]

    async def test_an_address_in_use_is_a_conflict_whatever_its_case(self, api: httpx.AsyncClient) -> None:
        account = await _account(api)
        sender = await _sender(api, account["account_id"])
        again = await api.post(
            "/sender-addresses",
            json={"account_id": account["account_id"], "name": "y", "email": sender["email"].upper()},
        )
        assert again.status_code == 409

    async def test_an_invalid_address_is_refused(self, api: httpx.AsyncClient) -> None:
        response = await api.post(
            "/sender-addresses", json={"account_id": 1, "name": "x", "email": "not-an-address"}
        )
        assert response.status_code == 422
        assert _fields(response) == ["email"]


class TestCampaigns:
    async def test_a_new_campaign_is_a_draft_with_its_groups_in_order(self, api: httpx.AsyncClient) -> None:
        campaign = await _campaign(api, group_ids=[2, 1])
        assert campaign["status"] == "draft"
        assert campaign["group_ids"] == [2, 1]
        assert (campaign["recipients"], campaign["remaining"], campaign["started_at"]) == (None, None, None)

    @pytest.mark.parametrize(
        ("overrides", "field", "message"),
        [
            ({"subject": "Olá {{ nome "}, "subject", "subject (line 1)"),
            ({"html": "{% for x in y %}"}, "html", "html"),
            ({"group_ids": [1, 404]}, "group_ids", "unknown group(s): 404"),
            ({"group_ids": [1, 1]}, "", "repeats a group"),
            ({"sender_address_id": 987654321}, "sender_address_id", "does not exist"),
            ({"priority": 10}, "priority", "less than or equal to 9"),
        ],
    )
    async def test_bad_campaigns_are_refused_with_the_reason(
        self, api: httpx.AsyncClient, overrides: dict[str, Any], field: str, message: str
    ) -> None:
        account = await _account(api)
        sender = await _sender(api, account["account_id"])
        body = {
            "name": "x",
            "sender_address_id": sender["sender_address_id"],
            "group_ids": [1],
            "subject": "s",
            "html": "<p>h</p>",
        } | overrides
        before = len((await api.get("/campaigns", params={"limit": 500})).json())
        response = await api.post("/campaigns", json=body)
        assert response.status_code == 422
        assert _fields(response) == [field]
        assert message in response.json()["detail"][0]["msg"]
        assert len((await api.get("/campaigns", params={"limit": 500})).json()) == before

    async def test_start_queues_the_campaign_and_announces_its_content(
        self, api: httpx.AsyncClient, events: Any
    ) -> None:
        await events.listen("campaign.started")
        campaign = await _campaign(api)
        started = await api.post(f"/campaigns/{campaign['campaign_id']}/start")
        assert started.status_code == 202
        assert started.json()["status"] == "queued" and started.json()["started_at"]

        async def announced() -> list[dict[str, Any]]:
            return [
                e for e in await events("campaign.started") if e["campaign_id"] == campaign["campaign_id"]
            ]

        (event,) = await eventually(announced)
        assert (event["subject"], event["html"], event["group_ids"], event["priority"]) == (
            "Olá {{ nome }}",
            "<p>Olá {{ nome }}</p>",
            [1, 2],
            7,
        )
        assert event["sender"]["name"] == "Itaú Social"

    async def test_illegal_status_changes_are_conflicts(self, api: httpx.AsyncClient) -> None:
        campaign = await _campaign(api)
        path = f"/campaigns/{campaign['campaign_id']}"
        assert (await api.post(f"{path}/start")).status_code == 202
        again = await api.post(f"{path}/start")
        assert (again.status_code, again.json()["detail"]) == (409, "cannot start a campaign that is queued")
        cancelled = await api.post(f"{path}/cancel")
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
        assert cancelled.json()["finished_at"]
        assert (await api.post(f"{path}/cancel")).status_code == 409
        assert (await api.post(f"{path}/start")).status_code == 409

    async def test_an_inactive_account_cannot_start_a_campaign(self, api: httpx.AsyncClient) -> None:
        account = await _account(api, active=False)
        sender = await _sender(api, account["account_id"])
        campaign = await api.post(
            "/campaigns",
            json={
                "name": "x",
                "sender_address_id": sender["sender_address_id"],
                "group_ids": [1],
                "subject": "s",
                "html": "h",
            },
        )
        response = await api.post(f"/campaigns/{campaign.json()['campaign_id']}/start")
        assert response.status_code == 409
        assert "inactive" in response.json()["detail"]
        assert (await api.get(f"/campaigns/{campaign.json()['campaign_id']}")).json()["status"] == "draft"

    async def test_pause_and_resume_announce_themselves_and_return_where_it_was(
        self, api: httpx.AsyncClient, events: Any
    ) -> None:
        await events.listen("campaign.paused")
        await events.listen("campaign.resumed")
        campaign = await _campaign(api)
        path = f"/campaigns/{campaign['campaign_id']}"
        draft_pause = await api.post(f"{path}/pause")
        assert (draft_pause.status_code, draft_pause.json()["detail"]) == (
            409,
            "cannot pause a campaign that is draft",
        )
        await api.post(f"{path}/start")
        paused = await api.post(f"{path}/pause")
        assert (paused.status_code, paused.json()["status"]) == (200, "paused")
        assert (await api.post(f"{path}/pause")).status_code == 409
        resumed = await api.post(f"{path}/resume")
        # Audience has not resolved it yet: back to queued, not sending.
        assert (resumed.status_code, resumed.json()["status"]) == (200, "queued")
        assert (await api.post(f"{path}/resume")).status_code == 409

        seen: dict[str, list[dict[str, Any]]] = {"campaign.paused": [], "campaign.resumed": []}

        async def announced() -> bool:
            for key, found in seen.items():
                found += [e for e in await events(key) if e["campaign_id"] == campaign["campaign_id"]]
            assert all(seen.values()), seen
            return True

        await eventually(announced)
        assert (len(seen["campaign.paused"]), len(seen["campaign.resumed"])) == (1, 1)

    async def test_unknown_campaigns_are_404(self, api: httpx.AsyncClient) -> None:
        for response in (
            await api.get("/campaigns/987654321"),
            await api.post("/campaigns/987654321/start"),
            await api.post("/campaigns/987654321/cancel"),
            await api.post("/campaigns/987654321/pause"),
            await api.post("/campaigns/987654321/resume"),
            await api.get("/campaigns/987654321/results"),
        ):
            assert response.status_code == 404

    async def test_results_start_empty(self, api: httpx.AsyncClient) -> None:
        campaign = await _campaign(api)
        results = await api.get(f"/campaigns/{campaign['campaign_id']}/results")
        body = results.json()
        assert (body["items"], body["next_after"]) == ([], None)
        assert body["totals"] | {"recipients": "?"} == {
            "recipients": "?",
            "sent": 0,
            "remaining": None,
            "read": 0,
            "unsubscribed": 0,
            "unsubscribed_campaign": 0,
            "unsubscribed_all": 0,
            "bounces": 0,
            "complaints": 0,
            "errors": 0,
            "skipped": 0,
            "indeterminate": 0,
            "unique_clicks": 0,
            "total_clicks": 0,
            "opens": 0,
            "machine_opens": 0,
            "machine_clicks": 0,
        }
        assert body["totals"]["recipients"] is None


class TestGroups:
    async def test_groups_are_created_in_audience(self, api: httpx.AsyncClient) -> None:
        created = await api.post("/groups", json={"name": "Equipe", "members": []})
        assert (created.status_code, created.json()["group_id"]) == (201, 9)
        assert (await api.get("/groups/1")).json()["members"] == 3
        assert (await api.get("/groups/77")).status_code == 404
