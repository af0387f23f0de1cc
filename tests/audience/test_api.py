"""Audience's internal HTTP API, served by the real app on this run's database."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.audience.support import MAX_MEMBERS, Audience

pytestmark = pytest.mark.connected


def _name() -> str:
    return f"group-{uuid.uuid4().hex[:12]}"


async def _stored(audience: Audience, name: str) -> bool:
    """Whether a group of this name was stored."""
    async with audience.runtime.pool.acquire() as conn:
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM groups WHERE name = $1)", name))


class TestCreateGroup:
    async def test_creates_a_static_group_and_counts_its_members(self, audience: Audience) -> None:
        name = _name()
        members = [
            {"email": "ana@example.com", "name": "Ana", "fields": {"cidade": "Recife"}},
            {"email": "bruno@example.net"},
        ]

        response = await audience.client.post("/internal/v1/groups", json={"name": name, "members": members})

        assert response.status_code == 201, response.text
        body = response.json()
        assert isinstance(body["group_id"], int)
        assert (body["name"], body["kind"], body["members"], body["duplicates_ignored"]) == (
            name,
            "static",
            2,
            0,
        )
        assert body["created_at"]

    async def test_an_address_repeated_in_other_letters_is_kept_once_and_reported(
        self, audience: Audience
    ) -> None:
        members = [
            {"email": "Ana.Souza@example.com", "name": "first"},
            {"email": "bruno@example.net"},
            {"email": "ana.souza@EXAMPLE.COM", "name": "second"},
            {"email": "ANA.SOUZA@example.com", "name": "third"},
        ]

        response = await audience.client.post(
            "/internal/v1/groups", json={"name": _name(), "members": members}
        )

        assert response.status_code == 201, response.text
        assert (response.json()["members"], response.json()["duplicates_ignored"]) == (2, 2)
        async with audience.runtime.pool.acquire() as conn:
            kept = await conn.fetch(
                "SELECT email, name FROM group_members WHERE group_id = $1 ORDER BY member_id",
                response.json()["group_id"],
            )
        assert [(r["email"], r["name"]) for r in kept] == [
            ("Ana.Souza@example.com", "first"),
            ("bruno@example.net", ""),
        ]

    async def test_a_group_without_members_is_allowed(self, audience: Audience) -> None:
        response = await audience.client.post("/internal/v1/groups", json={"name": _name()})

        assert response.status_code == 201, response.text
        assert (response.json()["members"], response.json()["duplicates_ignored"]) == (0, 0)

    async def test_an_invalid_address_is_refused_naming_its_position(self, audience: Audience) -> None:
        name = _name()
        members = [
            {"email": "ana@example.com"},
            {"email": "bruno@example.net"},
            {"email": "carla-at-example.org"},
        ]

        response = await audience.client.post("/internal/v1/groups", json={"name": name, "members": members})

        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "members", 2, "email"]
        assert "invalid e-mail address" in error["msg"]
        assert not await _stored(audience, name)

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"name": "x", "members": [], "owner": "me"}, ["body", "owner"]),
            (
                {"name": "x", "members": [{"email": "ana@example.com", "phone": "1"}]},
                ["body", "members", 0, "phone"],
            ),
        ],
    )
    async def test_an_unknown_field_is_refused(
        self, audience: Audience, body: dict[str, Any], loc: list[Any]
    ) -> None:
        response = await audience.client.post("/internal/v1/groups", json=body)

        assert response.status_code == 422, response.text
        assert [e["loc"] for e in response.json()["detail"]] == [loc]
        assert [e["type"] for e in response.json()["detail"]] == ["extra_forbidden"]

    async def test_more_members_than_the_request_limit_are_refused_and_nothing_is_stored(
        self, audience: Audience
    ) -> None:
        name = _name()
        members = [{"email": f"member{i}@example.com"} for i in range(MAX_MEMBERS + 1)]

        response = await audience.client.post("/internal/v1/groups", json={"name": name, "members": members})

        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "members"]
        assert str(MAX_MEMBERS) in error["msg"]
        assert not await _stored(audience, name)

    async def test_exactly_the_request_limit_is_accepted(self, audience: Audience) -> None:
        members = [{"email": f"member{i}@example.com"} for i in range(MAX_MEMBERS)]

        response = await audience.client.post(
            "/internal/v1/groups", json={"name": _name(), "members": members}
        )

        assert response.status_code == 201, response.text
        assert response.json()["members"] == MAX_MEMBERS


class TestGetGroup:
    async def test_returns_the_group_with_its_member_count(self, audience: Audience) -> None:
        name = _name()
        group_id = await audience.create_group(
            name, ["ana@example.com", "bruno@example.net", "carla@example.org"]
        )

        response = await audience.client.get(f"/internal/v1/groups/{group_id}")

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["group_id"], body["name"], body["kind"], body["members"]) == (
            group_id,
            name,
            "static",
            3,
        )
        assert "duplicates_ignored" not in body

    async def test_an_unknown_group_is_404(self, audience: Audience) -> None:
        group_id = 2**31 - 1

        response = await audience.client.get(f"/internal/v1/groups/{group_id}")

        assert response.status_code == 404, response.text
        assert response.json() == {"detail": f"group {group_id} not found"}

    @pytest.mark.parametrize("group_id", ["0", "-5", str(2**31), "abc"])
    async def test_an_id_no_group_can_have_is_422_not_a_server_error(
        self, audience: Audience, group_id: str
    ) -> None:
        response = await audience.client.get(f"/internal/v1/groups/{group_id}")

        assert response.status_code == 422, response.text
        assert [e["loc"] for e in response.json()["detail"]] == [["path", "group_id"]]


class TestListGroups:
    async def test_lists_every_group_in_creation_order_with_member_counts(self, audience: Audience) -> None:
        first, second = _name(), _name()
        first_id = await audience.create_group(first, ["ana@example.com"])
        second_id = await audience.create_group(second, ["ana@example.com", "bruno@example.net"])

        response = await audience.client.get("/internal/v1/groups", params={"after": first_id - 1})

        assert response.status_code == 200, response.text
        groups = {g["group_id"]: g for g in response.json()}
        assert (groups[first_id]["name"], groups[first_id]["members"]) == (first, 1)
        assert (groups[second_id]["name"], groups[second_id]["members"]) == (second, 2)
        ids = [g["group_id"] for g in response.json()]
        assert ids == sorted(ids)
