"""Grupos: groups listed and created (typed addresses, CSV upload with its error report, remote
URL with a preview) through the real audience service over HTTP; renaming and removal for
administrators, audited; bad input is a field error, never a 500."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from fastapi import FastAPI

from devtools.remote_group_server import RemoteGroupServer
from services.campaign.audience_client import AudienceClient
from tests.console.admin_support import Person, admin_app, audience_app, bounce_app, db, people, store_root

__all__ = ["admin_app", "audience_app", "bounce_app", "db", "people", "store_root"]

People = tuple[Person, Person]


@pytest.fixture(scope="module")
def remote_server() -> Iterator[RemoteGroupServer]:
    """A remote group of 25 records in pages of 10."""
    server = RemoteGroupServer(records=25, page_size=10, token="segredo-do-polo").start()
    yield server
    server.stop()


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


def _group_id(location: str) -> int:
    match = re.match(r"/console/grupos/(\d+)\?feito=criado$", location)
    assert match, location
    return int(match.group(1))


class TestStaticGroups:
    async def test_typed_addresses_make_a_group_listed_with_its_count(self, people: People, tag: str) -> None:
        _, person = people

        created = await person.post(
            "/console/grupos/novo",
            {
                "name": f"Equipe {tag}",
                "kind": "static",
                "members": "ana@exemplo.com.br\nBruno Lima <bruno@exemplo.com.br>\nCarla;carla@exemplo.com.br\n\n",
            },
        )
        group_id = _group_id(created.headers["location"])
        shown = await person.get(f"/console/grupos/{group_id}")
        listed = await person.get("/console/grupos", params={"q": tag})

        assert created.status_code == 303
        assert (
            shown.status_code == 200 and "Bruno Lima" in shown.text and "carla@exemplo.com.br" in shown.text
        )
        assert f"Equipe {tag}" in listed.text and re.search(r'class="num">3<', listed.text)
        assert "Renomear" not in listed.text, "a normal user does not rename"

    async def test_bad_lines_are_a_field_error_keeping_the_text(self, people: People, tag: str) -> None:
        _, person = people

        page = await person.post(
            "/console/grupos/novo",
            {"name": f"Equipe {tag}", "kind": "static", "members": "ana@exemplo.com.br\nsem-arroba\n"},
        )

        assert page.status_code == 422
        assert "Linha 2: e-mail inválido (sem-arroba)." in page.text
        assert "ana@exemplo.com.br\nsem-arroba" in page.text and f'value="Equipe {tag}"' in page.text

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"name": "", "kind": "static", "members": "a@exemplo.com.br"}, "Dê um nome ao grupo."),
            ({"name": "X", "kind": "static", "members": "  "}, "Digite ao menos um e-mail"),
            ({"name": "X", "kind": "outro"}, "Escolha o tipo do grupo."),
            ({"name": "X", "kind": "remote", "url": "ftp://x"}, "Use uma URL http(s)://."),
            ({"name": "X", "kind": "csv"}, "Escolha o arquivo CSV."),
        ],
    )
    async def test_missing_or_wrong_fields_are_errors(
        self, people: People, data: dict[str, str], message: str
    ) -> None:
        _, person = people

        page = await person.post("/console/grupos/novo", data)

        assert page.status_code == 422 and message in page.text


class TestCsvGroups:
    async def test_an_upload_imports_and_its_rejected_lines_download(self, people: People, tag: str) -> None:
        _, person = people
        content = "email;nome;cidade\nana@exemplo.com.br;Ana;Recife\nnao-e-email;Zé;Natal\nbia@exemplo.com.br;Bia;Belém\n"

        created = await person.post(
            "/console/grupos/novo",
            {"name": f"CSV {tag}", "kind": "csv"},
            files={"file": ("lista.csv", content.encode(), "text/csv")},
        )
        group_id = _group_id(created.headers["location"])
        shown = await person.get(f"/console/grupos/{group_id}")
        report = await person.get(f"/console/grupos/{group_id}/erros.csv")

        assert "Recife" in shown.text and "Baixar relatório de erros" in shown.text
        assert re.search(r'<div class="value">2</div><div class="label">Importadas', shown.text)
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
        assert "nao-e-email" in report.text and "ana@" not in report.text

    async def test_another_file_adds_to_the_group(self, people: People, tag: str) -> None:
        _, person = people
        created = await person.post(
            "/console/grupos/novo",
            {"name": f"CSV {tag}", "kind": "csv"},
            files={"file": ("a.csv", b"email\nana@exemplo.com.br\n", "text/csv")},
        )
        group_id = _group_id(created.headers["location"])

        added = await person.post(
            f"/console/grupos/{group_id}/csv",
            files={"file": ("b.csv", b"email\nbia@exemplo.com.br\n", "text/csv")},
        )
        shown = await person.get(f"/console/grupos/{group_id}")

        assert added.status_code == 303
        assert "bia@exemplo.com.br" in shown.text and "ana@exemplo.com.br" in shown.text

    async def test_a_file_of_another_type_is_refused(self, people: People, tag: str) -> None:
        _, person = people

        page = await person.post(
            "/console/grupos/novo",
            {"name": f"CSV {tag}", "kind": "csv"},
            files={"file": ("foto.png", b"\x89PNG", "image/png")},
        )

        assert page.status_code == 422 and "Envie um arquivo .csv ou .txt" in page.text
        assert f'value="CSV {tag}"' in page.text

    async def test_a_file_over_the_limit_is_refused_and_leaves_no_group(
        self, people: People, admin_app: FastAPI, tag: str
    ) -> None:
        _, person = people
        limit = admin_app.state.runtime.settings.CSV_UPLOAD_MAX_BYTES
        audience: AudienceClient = admin_app.state.runtime.state["audience"]
        admin_app.state.runtime.settings.CSV_UPLOAD_MAX_BYTES = 10_000
        try:
            small_limit = await person.post(
                "/console/grupos/novo",
                {"name": f"Grande {tag}", "kind": "csv"},
                files={"file": ("g.csv", b"email\n" + b"a@exemplo.com.br\n" * 700, "text/csv")},
            )
            huge = await person.post(
                "/console/grupos/novo",
                {"name": f"Enorme {tag}", "kind": "csv"},
                files={"file": ("g.csv", b"email\n" + b"a@exemplo.com.br\n" * 10_000, "text/csv")},
            )
        finally:
            admin_app.state.runtime.settings.CSV_UPLOAD_MAX_BYTES = limit

        assert small_limit.status_code == 422 and "passa do limite" in small_limit.text
        assert huge.status_code == 413 and "passa do limite" in huge.text
        assert not [g for g in await audience.list_groups() if tag in g["name"]]

    async def test_an_unreadable_file_is_a_field_error_and_leaves_no_group(
        self, people: People, admin_app: FastAPI, tag: str
    ) -> None:
        _, person = people
        audience: AudienceClient = admin_app.state.runtime.state["audience"]

        page = await person.post(
            "/console/grupos/novo",
            {"name": f"Ruim {tag}", "kind": "csv"},
            files={"file": ("r.csv", b"nome;cidade\nAna;Recife\n", "text/csv")},
        )

        assert page.status_code == 422 and "Arquivo não importado" in page.text
        assert not [g for g in await audience.list_groups() if tag in g["name"]]


class TestRemoteGroups:
    async def test_a_remote_group_shows_a_preview_without_its_token(
        self, people: People, remote_server: RemoteGroupServer, tag: str
    ) -> None:
        _, person = people

        created = await person.post(
            "/console/grupos/novo", {"name": f"Polo {tag}", "kind": "remote", "url": remote_server.url()}
        )
        group_id = _group_id(created.headers["location"])
        shown = await person.get(f"/console/grupos/{group_id}")

        assert "Prévia dos primeiros registros" in shown.text
        assert shown.text.count("@") >= 10
        assert "segredo-do-polo" not in shown.text

    async def test_a_private_address_is_refused_next_to_the_url(self, people: People, tag: str) -> None:
        _, person = people

        page = await person.post(
            "/console/grupos/novo",
            {"name": f"Interno {tag}", "kind": "remote", "url": "http://10.1.2.3/grupo?token=x"},
        )

        assert page.status_code == 422
        assert re.search(r'class="field-error"[^>]*>[^<]+', page.text)
        assert 'value="http://10.1.2.3/grupo?token=x"' in page.text


class TestAdministration:
    async def test_rename_and_remove_are_for_admins_and_audited(
        self, people: People, db: asyncpg.Connection, tag: str
    ) -> None:
        admin, person = people
        created = await person.post(
            "/console/grupos/novo", {"name": f"Equipe {tag}", "kind": "static", "members": "a@exemplo.com.br"}
        )
        group_id = _group_id(created.headers["location"])

        refused = [
            (await person.get(f"/console/grupos/{group_id}/renomear")).status_code,
            (await person.post(f"/console/grupos/{group_id}/renomear", {"name": "x"})).status_code,
            (await person.post(f"/console/grupos/{group_id}/remover")).status_code,
        ]
        empty = await admin.post(f"/console/grupos/{group_id}/renomear", {"name": " "})
        renamed = await admin.post(f"/console/grupos/{group_id}/renomear", {"name": f"Time {tag}"})
        confirm = await admin.get(f"/console/grupos/{group_id}/remover")
        removed = await admin.post(f"/console/grupos/{group_id}/remover")

        assert refused == [403, 403, 403]
        assert empty.status_code == 422 and "Dê um nome ao grupo." in empty.text
        assert renamed.status_code == 303 and confirm.status_code == 200 and removed.status_code == 303
        assert (await admin.get(f"/console/grupos/{group_id}")).status_code == 404
        actions = await db.fetch(
            "SELECT action FROM campaign.audit_log WHERE target = $1 ORDER BY audit_id", f"group:{group_id}"
        )
        assert [a["action"] for a in actions] == ["group.renamed", "group.removed"]

    async def test_audience_away_is_a_503_page(self, people: People, admin_app: FastAPI) -> None:
        _, person = people
        state = admin_app.state.runtime.state
        working = state["audience"]
        state["audience"] = AudienceClient("http://127.0.0.1:9")
        try:
            pages = [await person.get("/console/grupos"), await person.get("/console/grupos/1")]
        finally:
            state["audience"] = working

        assert [p.status_code for p in pages] == [503, 503]
