"""Endereços de envio SMTP: sending accounts and sender addresses created, edited and removed
from the console; secrets write-only and encrypted; changes announced to the senders and audited;
admins only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import asyncpg
import pytest

from shared.contracts import topology
from shared.crypto import SecretBox
from shared.settings import DEV_SECRET_KEY
from tests.console.admin_support import (
    Person,
    admin_app,
    audience_app,
    bounce_app,
    db,
    people,
    seed_campaign,
    store_root,
)
from tests.support import eventually

__all__ = ["admin_app", "audience_app", "bounce_app", "db", "people", "store_root"]

People = tuple[Person, Person]

SMTP_ACCOUNT = {
    "transport": "smtp",
    "smtp_host": "smtp.exemplo.com.br",
    "smtp_port": "587",
    "smtp_security": "starttls",
    "smtp_username": "envios",
    "smtp_password": "senha-muito-secreta",
    "rate_per_second": "12,5",
    "daily_quota": "50000",
    "bounce_threshold": "4",
    "complaint_threshold": "0,08",
    "pause_hours": "12",
    "active": "on",
}


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


async def _account(db: asyncpg.Connection, name: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM campaign.accounts WHERE name = $1", name)
    assert row is not None
    return row


async def _configured(
    rabbitmq_url: str,
) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractQueue]:
    """A queue receiving every account.configured from now on."""
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(topology.EVENTS.name, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="account.configured")
    return connection, queue


async def _announced(queue: aio_pika.abc.AbstractQueue, account_id: int, seen: list[dict[str, Any]]) -> bool:
    """Collect the account's announcements into `seen`; True once the edit's (bounce control on) is in."""
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        body: dict[str, Any] = json.loads(message.body)
        if body["account_id"] == account_id:
            seen.append(body)
    return any(body["bounce_control"] for body in seen)


class TestAccounts:
    async def test_a_new_smtp_account_is_stored_with_its_password_encrypted_and_announced(
        self, people: People, db: asyncpg.Connection, tag: str
    ) -> None:
        admin, _ = people
        name = f"SMTP {tag}"

        form = await admin.get("/console/enderecos-de-envio/contas/nova")
        created = await admin.post("/console/enderecos-de-envio/contas/nova", {**SMTP_ACCOUNT, "name": name})

        assert form.status_code == 200 and "Controle de bounce pelo CloudWatch" in form.text
        assert created.status_code == 303, created.text
        row = await _account(db, name)
        assert (row["smtp_host"], row["smtp_port"], row["rate_per_second"], row["daily_quota"]) == (
            "smtp.exemplo.com.br",
            587,
            12.5,
            50000,
        )
        assert (row["bounce_threshold"], row["complaint_threshold"], row["pause_hours"]) == (0.04, 0.0008, 12)
        assert row["smtp_password_encrypted"] != "senha-muito-secreta"
        assert SecretBox(DEV_SECRET_KEY).decrypt(row["smtp_password_encrypted"]) == "senha-muito-secreta"
        listed = await admin.get("/console/enderecos-de-envio")
        assert name in listed.text and "smtp.exemplo.com.br:587" in listed.text
        assert "senha-muito-secreta" not in listed.text
        audit = await db.fetchval(
            "SELECT action FROM campaign.audit_log WHERE target = $1", f"account:{row['account_id']}"
        )
        assert audit == "account.created"

    async def test_the_edit_form_never_shows_the_password_and_an_empty_one_keeps_it(
        self, people: People, db: asyncpg.Connection, tag: str, rabbitmq_url: str
    ) -> None:
        admin, _ = people
        connection, queue = await _configured(rabbitmq_url)
        name = f"SMTP {tag}"
        await admin.post("/console/enderecos-de-envio/contas/nova", {**SMTP_ACCOUNT, "name": name})
        before = await _account(db, name)

        form = await admin.get(f"/console/enderecos-de-envio/contas/{before['account_id']}/editar")
        saved = await admin.post(
            f"/console/enderecos-de-envio/contas/{before['account_id']}/editar",
            {
                **SMTP_ACCOUNT,
                "smtp_password": "",
                "smtp_host": "smtp2.exemplo.com.br",
                "bounce_control": "on",
            },
        )

        assert "senha-muito-secreta" not in form.text and before["smtp_password_encrypted"] not in form.text
        assert 'value="smtp.exemplo.com.br"' in form.text and 'value="12,5"' in form.text
        assert saved.status_code == 303, saved.text
        after = await _account(db, name)
        assert after["smtp_password_encrypted"] == before["smtp_password_encrypted"]
        assert after["smtp_host"] == "smtp2.exemplo.com.br" and after["bounce_control"] is True
        changed = await db.fetchval(
            "SELECT details FROM campaign.audit_log WHERE action = 'account.changed' AND target = $1",
            f"account:{before['account_id']}",
        )
        details = changed if isinstance(changed, dict) else json.loads(changed)
        assert set(details["changed"]) == {"smtp_host", "bounce_control"}
        seen: list[dict[str, Any]] = []
        await eventually(lambda: _announced(queue, before["account_id"], seen))
        announced = seen[-1]
        assert announced["bounce_control"] is True and announced["bounce_threshold"] == 0.04
        assert announced["smtp"]["host"] == "smtp2.exemplo.com.br"
        assert "senha-muito-secreta" not in json.dumps(announced)
        await connection.close()

    async def test_a_new_ses_account_needs_its_keys_and_keeps_the_secret_on_edit(
        self, people: People, db: asyncpg.Connection, tag: str
    ) -> None:
        admin, _ = people
        name = f"SES {tag}"
        base = {k: v for k, v in SMTP_ACCOUNT.items() if not k.startswith("smtp")}
        missing = await admin.post(
            "/console/enderecos-de-envio/contas/nova", {**base, "name": name, "transport": "ses"}
        )
        created = await admin.post(
            "/console/enderecos-de-envio/contas/nova",
            {
                **base,
                "name": name,
                "transport": "ses",
                "ses_region": "sa-east-1",
                "ses_access_key_id": "AKIAEXEMPLO",
                "ses_secret_access_key": "chave-secreta-aws",
                "bounce_control": "on",
            },
        )
        row = await _account(db, name)
        edited = await admin.post(
            f"/console/enderecos-de-envio/contas/{row['account_id']}/editar",
            {
                **base,
                "ses_region": "us-east-1",
                "ses_access_key_id": "AKIAEXEMPLO",
                "ses_secret_access_key": "",
            },
        )

        assert missing.status_code == 422
        assert "Informe a região" in missing.text and "Informe a chave secreta." in missing.text
        assert created.status_code == 303 and edited.status_code == 303
        after = await _account(db, name)
        assert after["ses_region"] == "us-east-1" and after["bounce_control"] is False
        assert (
            SecretBox(DEV_SECRET_KEY).decrypt(after["ses_secret_access_key_encrypted"]) == "chave-secreta-aws"
        )
        listed = await admin.get("/console/enderecos-de-envio")
        assert "chave-secreta-aws" not in listed.text and "Amazon SES (us-east-1)" in listed.text

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("rate_per_second", "dez", "Digite um número."),
            ("rate_per_second", "0", "Entre 0,01 e 10.000"),
            ("smtp_port", "70000", "Porta entre 1 e 65535."),
            ("bounce_threshold", "", "Preencha este campo."),
            ("daily_quota", "1,5", "Use um número inteiro."),
            ("smtp_host", "", "Informe o servidor SMTP."),
            ("name", "", "Dê um nome à conta."),
        ],
    )
    async def test_bad_fields_are_errors_next_to_them_keeping_what_was_typed(
        self, people: People, tag: str, field: str, value: str, message: str
    ) -> None:
        admin, _ = people

        page = await admin.post(
            "/console/enderecos-de-envio/contas/nova", {**SMTP_ACCOUNT, "name": f"Conta {tag}", field: value}
        )

        assert page.status_code == 422
        assert message in page.text
        assert "smtp.exemplo.com.br" in page.text or field == "smtp_host"
        assert "senha-muito-secreta" not in page.text, "a typed password is not sent back either"

    async def test_a_repeated_name_is_a_field_error(self, people: People, tag: str) -> None:
        admin, _ = people
        await admin.post("/console/enderecos-de-envio/contas/nova", {**SMTP_ACCOUNT, "name": f"Conta {tag}"})

        page = await admin.post(
            "/console/enderecos-de-envio/contas/nova", {**SMTP_ACCOUNT, "name": f"Conta {tag}"}
        )

        assert page.status_code == 422 and "Já existe uma conta com este nome." in page.text

    async def test_an_account_without_campaigns_is_removed_with_its_addresses(
        self, people: People, db: asyncpg.Connection, tag: str
    ) -> None:
        admin, _ = people
        await admin.post("/console/enderecos-de-envio/contas/nova", {**SMTP_ACCOUNT, "name": f"Conta {tag}"})
        account_id = (await _account(db, f"Conta {tag}"))["account_id"]
        await admin.post(
            "/console/enderecos-de-envio/novo",
            {"account_id": str(account_id), "name": "Avisos", "email": f"avisos-{tag}@exemplo.com.br"},
        )

        confirm = await admin.get(f"/console/enderecos-de-envio/contas/{account_id}/remover")
        removed = await admin.post(f"/console/enderecos-de-envio/contas/{account_id}/remover")

        assert f"avisos-{tag}@exemplo.com.br" in confirm.text
        assert removed.status_code == 303
        assert (
            await db.fetchval("SELECT count(*) FROM campaign.accounts WHERE account_id = $1", account_id) == 0
        )
        assert (
            await db.fetchval(
                "SELECT count(*) FROM campaign.sender_addresses WHERE account_id = $1", account_id
            )
            == 0
        )
        assert await db.fetchval(
            "SELECT count(*) FROM campaign.audit_log WHERE action = 'account.removed' AND target = $1",
            f"account:{account_id}",
        )

    async def test_an_account_with_campaigns_is_not_removed(
        self, people: People, db: asyncpg.Connection
    ) -> None:
        admin, _ = people
        account_id, _, _ = await seed_campaign(db)

        confirm = await admin.get(f"/console/enderecos-de-envio/contas/{account_id}/remover")
        refused = await admin.post(f"/console/enderecos-de-envio/contas/{account_id}/remover")

        assert "não pode ser removida" in confirm.text
        assert refused.status_code == 409
        assert (
            await db.fetchval("SELECT count(*) FROM campaign.accounts WHERE account_id = $1", account_id) == 1
        )


class TestSenderAddresses:
    async def test_an_address_is_created_edited_and_removed(
        self, people: People, db: asyncpg.Connection, tag: str
    ) -> None:
        admin, _ = people
        await admin.post("/console/enderecos-de-envio/contas/nova", {**SMTP_ACCOUNT, "name": f"Conta {tag}"})
        account_id = (await _account(db, f"Conta {tag}"))["account_id"]

        created = await admin.post(
            "/console/enderecos-de-envio/novo",
            {"account_id": str(account_id), "name": "Itaú Social", "email": f"social-{tag}@exemplo.com.br"},
        )
        sender_id = await db.fetchval(
            "SELECT sender_address_id FROM campaign.sender_addresses WHERE email = $1",
            f"social-{tag}@exemplo.com.br",
        )
        edited = await admin.post(
            f"/console/enderecos-de-envio/{sender_id}/editar",
            {
                "name": "Itaú Social - Avisos",
                "email": f"avisos-{tag}@exemplo.com.br",
                "reply_to": "resposta@exemplo.com.br",
            },
        )
        listed = await admin.get("/console/enderecos-de-envio", params={"q": tag})
        removed = await admin.post(f"/console/enderecos-de-envio/{sender_id}/remover")

        assert (created.status_code, edited.status_code, removed.status_code) == (303, 303, 303)
        assert f"avisos-{tag}@exemplo.com.br" in listed.text and "Itaú Social - Avisos" in listed.text
        assert "smtp.exemplo.com.br:587" in listed.text
        assert (
            await db.fetchval(
                "SELECT count(*) FROM campaign.sender_addresses WHERE sender_address_id = $1", sender_id
            )
            == 0
        )
        actions = await db.fetch(
            "SELECT action FROM campaign.audit_log WHERE target = $1 ORDER BY audit_id", f"sender:{sender_id}"
        )
        assert [a["action"] for a in actions] == ["sender.created", "sender.changed", "sender.removed"]

    async def test_bad_addresses_are_field_errors_keeping_what_was_typed(
        self, people: People, tag: str
    ) -> None:
        admin, _ = people

        page = await admin.post(
            "/console/enderecos-de-envio/novo",
            {"account_id": "999999999", "name": "", "email": "sem-arroba", "reply_to": "x@"},
        )

        assert page.status_code == 422
        for message in ("Escolha a conta de envio.", "Informe o nome do remetente.", "E-mail inválido."):
            assert message in page.text
        assert 'value="sem-arroba"' in page.text

    async def test_an_address_with_campaigns_is_not_removed(
        self, people: People, db: asyncpg.Connection
    ) -> None:
        admin, _ = people
        _, sender_id, _ = await seed_campaign(db)

        refused = await admin.post(f"/console/enderecos-de-envio/{sender_id}/remover")

        assert refused.status_code == 409 and "não pode ser removido" in refused.text


class TestAccess:
    @pytest.mark.parametrize(
        "path",
        [
            "/console/enderecos-de-envio",
            "/console/enderecos-de-envio/novo",
            "/console/enderecos-de-envio/contas/nova",
            "/console/enderecos-de-envio/contas/1/editar",
            "/console/enderecos-de-envio/1/remover",
        ],
    )
    async def test_a_normal_user_is_refused(self, people: People, path: str) -> None:
        _, person = people

        assert (await person.get(path)).status_code == 403
        assert (await person.post(path, SMTP_ACCOUNT)).status_code in {403, 405}

    async def test_unknown_ids_are_the_404_page(
        self, people: People, make_settings: Callable[..., Any]
    ) -> None:
        admin, _ = people

        assert (await admin.get("/console/enderecos-de-envio/contas/2000000000/editar")).status_code == 404
        assert (await admin.post("/console/enderecos-de-envio/2000000000/remover")).status_code == 404
        for path in (
            "/console/enderecos-de-envio/contas/99999999999/editar",
            "/console/usuarios/99999999999/editar",
            "/console/uso-das-contas/99999999999/ignorar-freio",
            "/console/grupos/99999999999",
        ):
            assert (await admin.get(path)).status_code == 422, path
