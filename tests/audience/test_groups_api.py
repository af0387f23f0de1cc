"""Audience's groups API beyond creation: kinds, rename, delete, members, CSV imports, previews."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import pytest

from devtools.remote_group_server import RemoteGroupServer
from tests.audience.support import CSV_MAX_BYTES, Audience

pytestmark = pytest.mark.connected

GROUPS = "/internal/v1/groups"


def _name() -> str:
    return f"group-{uuid.uuid4().hex[:12]}"


async def _create(audience: Audience, **body: Any) -> dict[str, Any]:
    response = await audience.client.post(GROUPS, json={"name": _name(), **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _upload(audience: Audience, group_id: int, data: bytes, filename: str = "lista.csv") -> Any:
    return await audience.client.post(
        f"{GROUPS}/{group_id}/csv",
        content=data,
        params={"filename": filename},
        headers={"Content-Type": "text/csv"},
    )


async def _members(audience: Audience, group_id: int) -> list[tuple[str, str, dict[str, str]]]:
    async with audience.runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT email, name, fields FROM group_members WHERE group_id = $1 ORDER BY member_id", group_id
        )
    return [(r["email"], r["name"], r["fields"]) for r in rows]


class TestCreateOtherKinds:
    async def test_a_remote_group_stores_its_url_encrypted_and_shows_it_without_the_token(
        self, audience: Audience, remote_server: RemoteGroupServer
    ) -> None:
        url = remote_server.url()

        created = await _create(audience, kind="remote", url=url)

        assert (created["kind"], created["members"]) == ("remote", 0)
        assert "segredo-do-polo" not in str(created)
        assert created["url"] == f"http://127.0.0.1:{remote_server.port}/grupo?token=***"
        shown = await audience.client.get(f"{GROUPS}/{created['group_id']}")
        assert shown.json()["url"] == created["url"]
        async with audience.runtime.pool.acquire() as conn:
            stored = await conn.fetchval(
                "SELECT remote_url_encrypted FROM groups WHERE group_id = $1", created["group_id"]
            )
        assert "segredo-do-polo" not in stored
        assert audience.runtime.state["remote"].secrets.decrypt(stored) == url

    @pytest.mark.parametrize(
        "url",
        ["http://169.254.169.254/latest/meta-data?token=1", "ftp://example.com/grupo", "http://localhost/g"],
    )
    async def test_a_url_that_may_never_be_fetched_is_refused(self, audience: Audience, url: str) -> None:
        response = await audience.client.post(GROUPS, json={"name": _name(), "kind": "remote", "url": url})

        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert (error["loc"], error["type"]) == (["body", "url"], "url_refused")

    async def test_a_csv_group_starts_empty(self, audience: Audience) -> None:
        created = await _create(audience, kind="csv")

        assert (created["kind"], created["members"], created["url"], created["fields"]) == (
            "csv",
            0,
            None,
            [],
        )


class TestRenameAndDelete:
    async def test_a_group_is_renamed(self, audience: Audience) -> None:
        created = await _create(audience)

        response = await audience.client.patch(
            f"{GROUPS}/{created['group_id']}", json={"name": "  Alunos 2026 "}
        )

        assert response.status_code == 200, response.text
        assert response.json()["name"] == "Alunos 2026"
        assert response.json()["updated_at"] >= created["updated_at"]

    async def test_a_group_is_deleted_with_its_members(self, audience: Audience) -> None:
        created = await _create(audience, members=[{"email": "ana@example.com"}])

        response = await audience.client.delete(f"{GROUPS}/{created['group_id']}")

        assert response.status_code == 204, response.text
        assert (await audience.client.get(f"{GROUPS}/{created['group_id']}")).status_code == 404
        assert await _members(audience, created["group_id"]) == []
        assert (await audience.client.delete(f"{GROUPS}/{created['group_id']}")).status_code == 404

    async def test_renaming_an_unknown_group_is_404(self, audience: Audience) -> None:
        response = await audience.client.patch(f"{GROUPS}/{2**31 - 1}", json={"name": "x"})

        assert response.status_code == 404, response.text


class TestListPaging:
    async def test_pages_follow_each_other_by_id(self, audience: Audience) -> None:
        ids = [(await _create(audience))["group_id"] for _ in range(3)]

        first = await audience.client.get(GROUPS, params={"after": ids[0] - 1, "limit": 2})
        second = await audience.client.get(GROUPS, params={"after": first.json()[-1]["group_id"], "limit": 2})

        assert [g["group_id"] for g in first.json()] == ids[:2]
        assert [g["group_id"] for g in second.json()][:1] == ids[2:]

    @pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"after": -1}])
    async def test_a_page_outside_the_limits_is_422(self, audience: Audience, params: dict[str, int]) -> None:
        assert (await audience.client.get(GROUPS, params=params)).status_code == 422


class TestAddMembers:
    async def test_members_are_added_to_a_static_group_and_repeats_counted(self, audience: Audience) -> None:
        created = await _create(audience, members=[{"email": "ana@example.com", "name": "Ana"}])

        response = await audience.client.post(
            f"{GROUPS}/{created['group_id']}/members",
            json={"members": [{"email": "ANA@example.com"}, {"email": "bia@example.com", "name": "Bia"}]},
        )

        assert response.status_code == 200, response.text
        assert response.json() == {
            "group_id": created["group_id"],
            "added": 1,
            "duplicates_ignored": 1,
            "members": 2,
        }
        assert [m[:2] for m in await _members(audience, created["group_id"])] == [
            ("ana@example.com", "Ana"),
            ("bia@example.com", "Bia"),
        ]

    async def test_only_a_static_group_takes_members(self, audience: Audience) -> None:
        created = await _create(audience, kind="csv")

        response = await audience.client.post(
            f"{GROUPS}/{created['group_id']}/members", json={"members": [{"email": "ana@example.com"}]}
        )

        assert response.status_code == 409, response.text
        assert "estático" in response.json()["detail"]


class TestCsvImport:
    async def test_a_utf8_file_with_bom_semicolons_quotes_and_extra_columns(self, audience: Audience) -> None:
        group = await _create(audience, kind="csv")
        data = (
            "\ufeffE-mail;Nome;Curso;Cidade Natal\r\n"
            'ana@example.com;"Souza; Ana";Letras;Recife\r\n'
            'bia@example.com;Bia;"História\r\nda Arte";São Paulo\r\n'
            "ANA@example.com;Ana de novo;Física;Olinda\r\n"
            "sem-arroba;Caio;Química;Natal\r\n"
        ).encode()

        response = await _upload(audience, group["group_id"], data)

        assert response.status_code == 201, response.text
        done = response.json()
        assert (done["encoding"], done["delimiter"], done["filename"]) == ("utf-8-sig", ";", "lista.csv")
        assert (done["rows"], done["imported"], done["invalid"], done["duplicate"]) == (4, 2, 1, 1)
        assert await _members(audience, group["group_id"]) == [
            ("ana@example.com", "Souza; Ana", {"curso": "Letras", "cidade_natal": "Recife"}),
            ("bia@example.com", "Bia", {"curso": "História\r\nda Arte", "cidade_natal": "São Paulo"}),
        ]
        shown = (await audience.client.get(f"{GROUPS}/{group['group_id']}")).json()
        assert (shown["members"], shown["fields"]) == (2, ["cidade_natal", "curso"])

    async def test_a_latin1_file_with_commas(self, audience: Audience) -> None:
        group = await _create(audience, kind="csv")
        data = "nome,email\nJoão Conceição,joao@example.com\n".encode("latin-1")

        response = await _upload(audience, group["group_id"], data)

        assert response.status_code == 201, response.text
        assert (response.json()["encoding"], response.json()["delimiter"]) == ("latin-1", ",")
        assert await _members(audience, group["group_id"]) == [("joao@example.com", "João Conceição", {})]

    async def test_rejected_lines_download_as_csv_with_line_numbers_reasons_and_no_formulas(
        self, audience: Audience
    ) -> None:
        group = await _create(audience, kind="csv")
        data = (
            "email,nome\n"
            "ana@example.com,Ana\n"
            ",Sem endereço\n"
            '"=HYPERLINK(""http://x"")",Malicioso\n'
            "bia@example.com\n"
            "caio@example.com,Caio\n"
        ).encode()
        imported = (await _upload(audience, group["group_id"], data)).json()

        response = await audience.client.get(f"{GROUPS}/{group['group_id']}/import-errors")

        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert f"importacao-{imported['import_id']}" in response.headers["content-disposition"]
        assert response.content.startswith("\ufeff".encode())
        rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
        assert rows[0] == ["linha", "motivo", "conteudo"]
        assert [(r[0], r[1][:16]) for r in rows[1:]] == [
            ("3", "e-mail ausente"),
            ("4", "e-mail inválido:"),
            ("5", "a linha tem 1 co"),
        ]
        assert rows[2][2] == '\'=HYPERLINK("http://x"),Malicioso'
        assert (imported["rows"], imported["imported"], imported["invalid"]) == (5, 2, 3)

    async def test_ten_thousand_rows_import_through_copy_with_errors_kept(self, audience: Audience) -> None:
        group = await _create(audience, kind="csv")
        lines = ["nome;email;turma"]
        for i in range(1, 10_001):
            lines.append(
                f"Pessoa {i};pessoa{i}@example.com;{i % 7}" if i % 1000 else f"Pessoa {i};quebrado;x"
            )
        lines.append("Repetida;PESSOA1@example.com;1")
        data = "\n".join(lines).encode()

        response = await _upload(audience, group["group_id"], data)

        assert response.status_code == 201, response.text
        done = response.json()
        assert (done["rows"], done["imported"], done["invalid"], done["duplicate"]) == (10_001, 9_990, 10, 1)
        async with audience.runtime.pool.acquire() as conn:
            lines_rejected = await conn.fetch(
                "SELECT line FROM import_errors WHERE import_id = $1 ORDER BY line", done["import_id"]
            )
            last = await conn.fetchrow(
                "SELECT email, fields FROM group_members WHERE group_id = $1 ORDER BY member_id DESC LIMIT 1",
                group["group_id"],
            )
        assert [r["line"] for r in lines_rejected] == [i * 1000 + 1 for i in range(1, 11)]
        assert (last["email"], last["fields"]) == ("pessoa9999@example.com", {"turma": str(9999 % 7)})

    async def test_a_second_file_adds_only_new_addresses(self, audience: Audience) -> None:
        group = await _create(audience, kind="csv")
        await _upload(audience, group["group_id"], b"email\nana@example.com\n")

        response = await _upload(audience, group["group_id"], b"email\nAna@example.com\nbia@example.com\n")

        assert (response.json()["imported"], response.json()["duplicate"]) == (1, 1)
        assert (await audience.client.get(f"{GROUPS}/{group['group_id']}")).json()["members"] == 2

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"nome;telefone\nAna;123\n", "não tem coluna de e-mail"),
            (b"", "vazio"),
        ],
    )
    async def test_a_file_that_cannot_be_read_is_refused_and_nothing_is_stored(
        self, audience: Audience, data: bytes, message: str
    ) -> None:
        group = await _create(audience, kind="csv")

        response = await _upload(audience, group["group_id"], data)

        assert response.status_code == 422, response.text
        assert message in response.json()["detail"]
        assert (await audience.client.get(f"{GROUPS}/{group['group_id']}/import-errors")).status_code == 404

    async def test_a_file_over_the_limit_is_413(self, audience: Audience) -> None:
        group = await _create(audience, kind="csv")

        response = await _upload(
            audience, group["group_id"], b"email\n" + b"a@example.com\n" * (CSV_MAX_BYTES // 14 + 1)
        )

        assert response.status_code == 413, response.text
        assert await _members(audience, group["group_id"]) == []

    async def test_only_a_csv_group_takes_files(self, audience: Audience) -> None:
        group = await _create(audience)

        response = await _upload(audience, group["group_id"], b"email\nana@example.com\n")

        assert response.status_code == 409, response.text


class TestPreview:
    async def test_a_csv_group_shows_its_count_first_rows_and_rejected_lines(
        self, audience: Audience
    ) -> None:
        group = await _create(audience, kind="csv")
        await _upload(audience, group["group_id"], b"email,curso\na@example.com,x\nb@example.com,y\nruim,z\n")

        response = await audience.client.get(f"{GROUPS}/{group['group_id']}/preview", params={"limit": 1})

        assert response.status_code == 200, response.text
        preview = response.json()
        assert (preview["kind"], preview["members"]) == ("csv", 2)
        assert preview["rows"] == [{"email": "a@example.com", "name": "", "fields": {"curso": "x"}}]
        assert [(e["line"], e["content"]) for e in preview["errors"]] == [(4, "ruim,z")]
        assert preview["last_import"]["imported"] == 2

    async def test_a_remote_group_shows_its_first_records_read_from_its_first_pages(
        self, audience: Audience, remote_server: RemoteGroupServer
    ) -> None:
        group = await _create(audience, kind="remote", url=remote_server.url())

        response = await audience.client.get(f"{GROUPS}/{group['group_id']}/preview", params={"limit": 12})

        assert response.status_code == 200, response.text
        preview = response.json()
        assert (preview["members"], preview["errors"]) == (None, [])
        assert [r["email"] for r in preview["rows"]] == [f"pessoa{i}@example.com" for i in range(1, 13)]

    async def test_a_remote_group_that_misbehaves_shows_the_error_and_its_page(
        self, audience: Audience, remote_server: RemoteGroupServer
    ) -> None:
        group = await _create(audience, kind="remote", url=remote_server.url(fault="broken_json"))

        response = await audience.client.get(f"{GROUPS}/{group['group_id']}/preview", params={"limit": 20})

        assert response.status_code == 200, response.text
        preview = response.json()
        assert len(preview["rows"]) == 10
        [error] = preview["errors"]
        assert (error["page"], error["reason"]) == (2, "a resposta não é um JSON válido")
        assert "segredo" not in response.text
