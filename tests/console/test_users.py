"""Usuários: list and filter, edit of the role and linked sender addresses, removal; admins only,
each change audited."""

from __future__ import annotations

import re
import uuid

import asyncpg
import httpx

from tests.console.admin_support import (
    Person,
    admin_app,
    audience_app,
    bounce_app,
    db,
    people,
    service_api,
    store_root,
)
from tests.console.conftest import ADMIN_EMAIL

__all__ = ["admin_app", "audience_app", "bounce_app", "db", "people", "service_api", "store_root"]

People = tuple[Person, Person]


async def _sender(service_api: httpx.AsyncClient) -> dict[str, object]:
    tag = uuid.uuid4().hex[:8]
    account = await service_api.post(
        "/accounts", json={"name": f"Conta {tag}", "transport": "smtp", "smtp": {"host": "smtp.test"}}
    )
    assert account.status_code == 201, account.text
    sender = await service_api.post(
        "/sender-addresses",
        json={
            "account_id": account.json()["account_id"],
            "name": f"Remetente {tag}",
            "email": f"r-{tag}@org.example.com",
        },
    )
    assert sender.status_code == 201, sender.text
    body: dict[str, object] = sender.json()
    return body


async def _user_id(db: asyncpg.Connection, email: str) -> int:
    user_id: int = await db.fetchval(
        "SELECT user_id FROM campaign.users WHERE lower(email) = lower($1)", email
    )
    return user_id


class TestUserList:
    async def test_lists_users_with_role_and_filter(self, people: People) -> None:
        admin, person = people

        page = await admin.get("/console/usuarios")
        filtered = await admin.get("/console/usuarios", params={"q": person.email})

        assert page.status_code == 200
        assert "Usuários" in page.text and "Administrador" in page.text
        rows = filtered.text.split("<tbody>")[1]
        assert person.email in rows and ADMIN_EMAIL not in rows

    async def test_a_normal_user_is_refused(self, people: People) -> None:
        _, person = people

        assert (await person.get("/console/usuarios")).status_code == 403
        assert (await person.get("/console/usuarios/1/editar")).status_code == 403
        assert (await person.post("/console/usuarios/1/editar", {"role": "admin"})).status_code == 403
        assert (await person.post("/console/usuarios/1/remover")).status_code == 403


class TestEditUser:
    async def test_role_and_senders_are_saved_and_audited(
        self, people: People, service_api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        admin, person = people
        sender = await _sender(service_api)
        user_id = await _user_id(db, person.email)

        form = await admin.get(f"/console/usuarios/{user_id}/editar")
        saved = await admin.post(
            f"/console/usuarios/{user_id}/editar",
            {"role": "admin", "senders[]": [str(sender["sender_address_id"])]},
        )

        assert form.status_code == 200 and str(sender["email"]) in form.text
        assert saved.status_code == 303
        assert await db.fetchval("SELECT role FROM campaign.users WHERE user_id = $1", user_id) == "admin"
        links = await db.fetch(
            "SELECT sender_address_id FROM campaign.user_sender_addresses WHERE user_id = $1", user_id
        )
        assert [r["sender_address_id"] for r in links] == [sender["sender_address_id"]]
        actions = await db.fetch(
            "SELECT action, actor FROM campaign.audit_log WHERE target = $1 ORDER BY audit_id",
            f"user:{user_id}",
        )
        assert [(a["action"], a["actor"]) for a in actions] == [
            ("user.role_changed", ADMIN_EMAIL),
            ("user.senders_changed", ADMIN_EMAIL),
        ]
        listed = await admin.get("/console/usuarios", params={"q": person.email})
        assert str(sender["email"]) in listed.text

    async def test_bad_choices_are_field_errors_keeping_what_was_chosen(
        self, people: People, service_api: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        admin, person = people
        sender = await _sender(service_api)
        user_id = await _user_id(db, person.email)

        page = await admin.post(
            f"/console/usuarios/{user_id}/editar",
            {"role": "dono", "senders[]": [str(sender["sender_address_id"]), "999999999"]},
        )

        assert page.status_code == 422
        assert "Escolha administrador ou normal." in page.text
        assert "Um dos endereços escolhidos não existe mais" in page.text
        assert re.search(rf'value="{sender["sender_address_id"]}" checked', page.text)
        assert await db.fetchval("SELECT role FROM campaign.users WHERE user_id = $1", user_id) == "normal"

    async def test_an_admin_cannot_demote_themselves(self, people: People, db: asyncpg.Connection) -> None:
        admin, _ = people
        own_id = await _user_id(db, ADMIN_EMAIL)

        page = await admin.post(f"/console/usuarios/{own_id}/editar", {"role": "normal"})

        assert page.status_code == 422
        assert "seu próprio perfil" in page.text
        assert await db.fetchval("SELECT role FROM campaign.users WHERE user_id = $1", own_id) == "admin"

    async def test_an_unknown_user_is_the_404_page(self, people: People) -> None:
        admin, _ = people

        assert (await admin.get("/console/usuarios/2000000000/editar")).status_code == 404
        assert (await admin.get("/console/usuarios/abc/editar")).status_code in {404, 422}


class TestRemoveUser:
    async def test_removal_asks_first_then_removes_and_audits(
        self, people: People, db: asyncpg.Connection
    ) -> None:
        admin, person = people
        user_id = await _user_id(db, person.email)

        confirm = await admin.get(f"/console/usuarios/{user_id}/remover")
        removed = await admin.post(f"/console/usuarios/{user_id}/remover")

        assert confirm.status_code == 200 and person.email in confirm.text
        assert removed.status_code == 303
        assert await db.fetchval("SELECT count(*) FROM campaign.users WHERE user_id = $1", user_id) == 0
        assert (
            await db.fetchval(
                "SELECT count(*) FROM campaign.audit_log WHERE action = 'user.removed' AND target = $1",
                f"user:{user_id}",
            )
            == 1
        )
        # The removed user's session no longer opens the console.
        assert (await person.get("/console/campanhas")).status_code == 303

    async def test_an_admin_cannot_remove_themselves(self, people: People, db: asyncpg.Connection) -> None:
        admin, _ = people
        own_id = await _user_id(db, ADMIN_EMAIL)

        refused = await admin.post(f"/console/usuarios/{own_id}/remover")

        assert refused.status_code == 409
        assert await db.fetchval("SELECT count(*) FROM campaign.users WHERE user_id = $1", own_id) == 1

    async def test_a_post_without_the_csrf_token_is_refused(
        self, people: People, db: asyncpg.Connection
    ) -> None:
        admin, person = people
        user_id = await _user_id(db, person.email)

        refused = await admin.client.post(f"/console/usuarios/{user_id}/remover", data={})

        assert refused.status_code == 403
        assert await db.fetchval("SELECT count(*) FROM campaign.users WHERE user_id = $1", user_id) == 1
