"""The campaign screens as a person uses them (through HTTP, without a browser): the list with
its filter, sort and paging; the form with its errors in Portuguese; the actions; the test send;
and the results with their filter, keyset pages and export link."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.campaign.console import campaigns as campaign_pages
from services.campaign.console.repository import UserRepository
from services.campaign.console.templating import datahora
from tests.console.conftest import ADMIN_EMAIL, sign_in
from tests.console.test_access import _sender


@pytest.fixture
async def senders(service_api: httpx.AsyncClient) -> tuple[int, int]:
    """Two sender addresses (of two accounts)."""
    return await _sender(service_api, "Itaú Social"), await _sender(service_api, "Outro Remetente")


@pytest.fixture
async def admin(browser: Callable[[], httpx.AsyncClient]) -> Any:
    """A signed-in administrator: (client, csrf)."""
    client = browser()
    return client, await sign_in(client, ADMIN_EMAIL, "Chefe")


@pytest.fixture
async def normal(
    console_app: FastAPI, browser: Callable[[], httpx.AsyncClient], senders: tuple[int, int]
) -> Any:
    """A signed-in normal user linked to the first sender: (client, csrf, email)."""
    client = browser()
    email = f"normal-{uuid.uuid4().hex[:6]}@console.test"
    csrf = await sign_in(client, email, "Pessoa Normal")
    async with console_app.state.runtime.pool.acquire() as conn:
        user_id = await conn.fetchval("SELECT user_id FROM users WHERE email = $1", email)
        await UserRepository(conn).set_senders(user_id, [senders[0]])
    return client, csrf, email


def _form(sender: int, csrf: str, **changes: Any) -> dict[str, Any]:
    return {
        "csrf_token": csrf,
        "name": f"Campanha {uuid.uuid4().hex[:6]}",
        "sender_address_id": str(sender),
        "group_ids": ["1"],
        "subject": "Olá {{ nome }}",
        "html": "<p>Olá {{ nome }} de {{ cidade }}</p>",
        "priority": "5",
        "tracking": "full",
        **changes,
    }


async def _create(client: httpx.AsyncClient, form: dict[str, Any]) -> int:
    response = await client.post("/console/campanhas/nova", data=form)
    assert response.status_code == 303, response.text
    listing = (await client.get("/console/campanhas", params={"q": form["name"]})).text
    match = re.search(r'id="campaign-(\d+)"', listing)
    assert match, listing
    return int(match.group(1))


class TestTheForm:
    async def test_errors_are_in_portuguese_next_to_the_fields_and_keep_what_was_typed(
        self, admin: Any, senders: tuple[int, int]
    ) -> None:
        client, csrf = admin
        response = await client.post(
            "/console/campanhas/nova",
            data=_form(senders[0], csrf, name="", group_ids=[], subject="Oi {{ nome", html="<b>mantido</b>"),
        )
        assert response.status_code == 422
        page = response.text
        assert "Informe o nome da campanha." in page
        assert "Escolha ao menos um grupo." in page
        assert "Erro no modelo" in page and 'value="Oi {{ nome"' in page
        assert "&lt;b&gt;mantido&lt;/b&gt;" in page  # the body typed is kept (escaped in the textarea)

    async def test_a_group_audience_does_not_know_is_an_error_on_the_groups(
        self, admin: Any, senders: tuple[int, int]
    ) -> None:
        client, csrf = admin
        response = await client.post(
            "/console/campanhas/nova", data=_form(senders[0], csrf, group_ids=["77"])
        )
        assert response.status_code == 422
        assert "Grupo inexistente: 77" in response.text

    async def test_garbage_is_never_a_500(self, admin: Any, senders: tuple[int, int]) -> None:
        client, csrf = admin
        for bad in (
            {"sender_address_id": "abc"},
            {"priority": "99"},
            {"priority": "x"},
            {"tracking": "spy"},
            {"group_ids": ["x", "1"]},
            {"attachments": ["../../etc/passwd"]},
            {"html": "{% for %}"},
            {"sender_address_id": "999999"},
        ):
            response = await client.post("/console/campanhas/nova", data=_form(senders[0], csrf, **bad))
            assert response.status_code == 422, (bad, response.text[-500:])

    async def test_without_senders_a_user_is_told_to_ask_and_an_administrator_where_to_add_them(
        self, admin: Any, browser: Callable[[], httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        client = browser()
        await sign_in(client, f"sem-remetente-{uuid.uuid4().hex[:6]}@console.test", "Sem Remetente")

        page = (await client.get("/console/campanhas/nova")).text

        assert "Peça a um administrador" in page

        # The run's database holds other tests' senders, which an administrator sees: none here.
        async def no_senders(*_: Any) -> list[Any]:
            return []

        monkeypatch.setattr(campaign_pages, "_senders", no_senders)
        admin_client, _ = admin
        page = (await admin_client.get("/console/campanhas/nova")).text
        assert "Peça a um administrador" not in page
        assert '<a href="/console/enderecos-de-envio">Endereços de envio SMTP</a>' in page

    async def test_a_normal_user_is_offered_only_their_senders_and_cannot_use_another(
        self, normal: Any, senders: tuple[int, int]
    ) -> None:
        client, csrf, _ = normal
        page = (await client.get("/console/campanhas/nova")).text
        select = page[
            page.index('id="sender_address_id"') : page.index(
                "</select>", page.index('id="sender_address_id"')
            )
        ]
        assert f'value="{senders[0]}"' in select and f'value="{senders[1]}"' not in select
        response = await client.post("/console/campanhas/nova", data=_form(senders[1], csrf))
        assert response.status_code == 422
        assert "Você não pode enviar com este remetente." in response.text

    async def test_the_preview_renders_the_body_for_the_user(self, admin: Any) -> None:
        client, csrf = admin
        response = await client.post(
            "/console/campanhas/previa",
            data={"csrf_token": csrf, "html": "<p>Olá {{ nome }} de {{ cidade }}</p>"},
        )
        assert "srcdoc=" in response.text and "Olá Chefe de [cidade]" in response.text
        broken = await client.post("/console/campanhas/previa", data={"csrf_token": csrf, "html": "{{ nome "})
        assert "Erro no modelo" in broken.text

    async def test_files_of_the_file_manager_are_offered_and_kept(
        self, console_app: FastAPI, admin: Any, senders: tuple[int, int], tmp_path: Path
    ) -> None:
        (tmp_path / "files" / "logo.png").write_bytes(b"\x89PNG fake")
        (tmp_path / "files" / "regulamento.pdf").write_bytes(b"%PDF fake")
        client, csrf = admin
        page = (await client.get("/console/campanhas/nova")).text
        assert 'value="logo.png"' in page and 'value="regulamento.pdf"' in page
        campaign_id = await _create(
            client, _form(senders[0], csrf, attachments=["regulamento.pdf"], images=["logo.png"])
        )
        async with console_app.state.runtime.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT key, inline, content_id, content_type FROM campaign_attachments WHERE campaign_id = $1"
                " ORDER BY position",
                campaign_id,
            )
        assert [tuple(r) for r in rows] == [
            ("regulamento.pdf", False, None, "application/pdf"),
            ("logo.png", True, "logo.png", "image/png"),
        ]
        edit = (await client.get(f"/console/campanhas/{campaign_id}/editar")).text
        assert re.search(r'value="regulamento.pdf"\s+checked', edit)


class TestTheList:
    async def test_create_edit_start_pause_resume_cancel_and_duplicate(
        self, console_app: FastAPI, admin: Any, senders: tuple[int, int]
    ) -> None:
        client, csrf = admin
        form = _form(senders[0], csrf)
        campaign_id = await _create(client, form)
        edited = await client.post(
            f"/console/campanhas/{campaign_id}/editar",
            data={**form, "subject": "Novo assunto", "group_ids": ["1", "2"]},
        )
        assert edited.status_code == 303, edited.text
        async with console_app.state.runtime.pool.acquire() as conn:
            subject = await conn.fetchval("SELECT subject FROM campaigns WHERE campaign_id = $1", campaign_id)
        assert subject == "Novo assunto"

        async def act(action: str) -> str:
            response = await client.post(
                f"/console/campanhas/{campaign_id}/{action}",
                data={"csrf_token": csrf},
                headers={"referer": "http://test/console/campanhas"},
            )
            assert response.status_code == 303
            return (await client.get("/console/campanhas", params={"q": form["name"]})).text

        assert f"Campanha {campaign_id} iniciada." in await act("iniciar")
        assert "Pausada" in await act("pausar")
        page = await act("retomar")
        assert f"Campanha {campaign_id} retomada." in page
        page = await act("iniciar")
        assert "Só uma campanha em rascunho pode ser iniciada." in page
        page = await act("cancelar")
        assert "Cancelada" in page
        # Who started, paused, resumed and cancelled it is in the audit log (not the refused start).
        async with console_app.state.runtime.pool.acquire() as conn:
            audited = await conn.fetch(
                "SELECT action, actor FROM campaign.audit_log WHERE target = $1 ORDER BY audit_id",
                f"campaign:{campaign_id}",
            )
        assert [(r["action"], r["actor"]) for r in audited] == [
            ("campaign.started", ADMIN_EMAIL),
            ("campaign.paused", ADMIN_EMAIL),
            ("campaign.resumed", ADMIN_EMAIL),
            ("campaign.cancelled", ADMIN_EMAIL),
        ]

        response = await client.post(f"/console/campanhas/{campaign_id}/duplicar", data={"csrf_token": csrf})
        assert response.status_code == 303
        copy_id = int(response.headers["location"].split("/")[3])
        copy_page = (await client.get(response.headers["location"])).text
        assert f"Cópia de {form['name']}" in copy_page and "Novo assunto" in copy_page
        assert copy_id != campaign_id

    async def test_filter_sort_and_paging(self, admin: Any, senders: tuple[int, int]) -> None:
        client, csrf = admin
        marker = uuid.uuid4().hex[:6]
        for n in range(3):
            await _create(client, _form(senders[0], csrf, name=f"Lote {marker} {n}"))
        page = (
            await client.get("/console/campanhas", params={"q": marker, "ordem": "nome", "sentido": "asc"})
        ).text
        names = re.findall(rf"Lote {marker} (\d)", page)
        assert names == ["0", "1", "2"]
        page = (
            await client.get("/console/campanhas", params={"q": marker, "ordem": "nome", "sentido": "desc"})
        ).text
        assert re.findall(rf"Lote {marker} (\d)", page) == ["2", "1", "0"]
        partial = await client.get(
            "/console/campanhas", params={"q": marker}, headers={"HX-Target": "campaign-table"}
        )
        assert "<html" not in partial.text and "3 campanhas" in partial.text
        assert (
            "Nenhuma campanha encontrada"
            in (await client.get("/console/campanhas", params={"q": "zz-nada"})).text
        )

    async def test_dates_are_shown_in_sao_paulo_time(self) -> None:
        from datetime import UTC, datetime

        assert datahora(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "02/01/2026 00:04:05"
        assert datahora(None) == ""

    async def test_a_normal_user_sees_and_acts_only_on_their_senders_campaigns(
        self, admin: Any, normal: Any, senders: tuple[int, int]
    ) -> None:
        admin_client, admin_csrf = admin
        theirs = await _create(
            admin_client, _form(senders[1], admin_csrf, name=f"Alheia {uuid.uuid4().hex[:6]}")
        )
        client, csrf, _ = normal
        mine = await _create(client, _form(senders[0], csrf, name=f"Minha {uuid.uuid4().hex[:6]}"))
        listing = (await client.get("/console/campanhas")).text
        assert f'id="campaign-{mine}"' in listing and f'id="campaign-{theirs}"' not in listing
        for path in (f"/console/campanhas/{theirs}/editar", f"/console/campanhas/{theirs}/resultado"):
            assert (await client.get(path)).status_code == 404
        refused = await client.post(f"/console/campanhas/{theirs}/cancelar", data={"csrf_token": csrf})
        assert refused.status_code == 404
        # The menu hides what is for administrators only.
        assert "Usuários" not in listing

    async def test_live_rows_poll_their_status(self, admin: Any, senders: tuple[int, int]) -> None:
        client, csrf = admin
        campaign_id = await _create(client, _form(senders[0], csrf))
        await client.post(f"/console/campanhas/{campaign_id}/iniciar", data={"csrf_token": csrf})
        row = await client.get(f"/console/campanhas/{campaign_id}/linha")
        assert row.status_code == 200
        assert 'hx-trigger="every 2s"' in row.text and "<html" not in row.text


class TestTestSend:
    async def test_sends_the_content_to_the_users_own_address_outside_the_list(
        self, console_app: FastAPI, admin: Any, senders: tuple[int, int]
    ) -> None:
        client, csrf = admin
        form = _form(senders[0], csrf, group_ids=[])
        response = await client.post("/console/campanhas/teste", data=form)
        assert f"Teste enviado para {ADMIN_EMAIL}" in response.text, response.text
        async with console_app.state.runtime.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT campaign_id, status, origin FROM campaigns WHERE name = $1", f"[Teste] {form['name']}"
            )
        assert row["origin"] == "test" and row["status"] == "queued"
        assert f'id="campaign-{row["campaign_id"]}"' not in (await client.get("/console/campanhas")).text

    async def test_a_broken_form_is_not_sent(self, admin: Any, senders: tuple[int, int]) -> None:
        client, csrf = admin
        response = await client.post("/console/campanhas/teste", data=_form(senders[0], csrf, subject=""))
        assert "Corrija o formulário" in response.text


class TestResults:
    async def test_totals_rows_filter_keyset_pages_and_export(
        self, console_app: FastAPI, admin: Any, senders: tuple[int, int]
    ) -> None:
        client, csrf = admin
        campaign_id = await _create(client, _form(senders[0], csrf))
        async with console_app.state.runtime.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO results (campaign_id, recipient_id, email, name, status, sent_at, reason)"
                " SELECT $1, n, 'pessoa' || n || '@exemplo.org', 'Pessoa ' || n,"
                " CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'sent' END, now(),"
                " CASE WHEN n % 10 = 0 THEN '550 caixa inexistente' END"
                " FROM generate_series(1, 60) AS n",
                campaign_id,
            )
            await conn.execute(
                "UPDATE campaigns SET status = 'completed', recipients = 60, sent = 54, failed = 6,"
                " started_at = now(), finished_at = now() WHERE campaign_id = $1",
                campaign_id,
            )
        page = (await client.get(f"/console/campanhas/{campaign_id}/resultado")).text
        assert "Total de destinatários" in page and ">60<" in page and ">54<" in page
        assert page.count("@exemplo.org&gt;") == 50
        next_link = re.search(r'href="\?apos=(\d+)"', page)
        assert next_link and next_link.group(1) == "50"
        second = (await client.get(f"/console/campanhas/{campaign_id}/resultado", params={"apos": 50})).text
        assert second.count("@exemplo.org&gt;") == 10
        failed = (
            await client.get(f"/console/campanhas/{campaign_id}/resultado", params={"situacao": "failed"})
        ).text
        assert failed.count("550 caixa inexistente") == 6
        searched = (
            await client.get(f"/console/campanhas/{campaign_id}/resultado", params={"q": "pessoa7@"})
        ).text
        assert searched.count("@exemplo.org&gt;") == 1
        export = re.search(r'id="export"[^>]*href="([^"]+)"', failed)
        assert export and export.group(1) == f"/api/v1/campaigns/{campaign_id}/results.csv?status=failed"
        csv = await client.get(export.group(1))
        assert csv.status_code == 200 and csv.text.count("550 caixa inexistente") == 6
