"""Gerenciador de arquivos: upload (type and size limited, never overwriting), list with the
public URL, removal for administrators (audited); and tracking serving those URLs to recipients,
from the local store and from S3 on moto's server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aioboto3
import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.tracking.app import create_app as create_tracking
from services.tracking.settings import TrackingSettings
from shared.files import LocalFileStore, S3Credentials, S3FileStore
from tests import aws
from tests.console.admin_support import Person, admin_app, audience_app, bounce_app, db, people, store_root

__all__ = ["admin_app", "audience_app", "bounce_app", "db", "people", "store_root"]

People = tuple[Person, Person]


def _names(root: Path) -> list[str]:
    """The files in the store's directory (none if it was never made)."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _put(root: Path, name: str, data: bytes) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class TestUpload:
    async def test_an_image_is_stored_listed_with_its_public_url(
        self, people: People, store_root: Path
    ) -> None:
        _, person = people

        sent = await person.post(
            "/console/arquivos", files={"file": ("Logo Itaú Social.PNG", PNG, "image/png")}
        )
        page = await person.get("/console/arquivos")

        assert sent.status_code == 303
        assert _names(store_root) == ["Logo-Itau-Social.png"]
        assert "http://127.0.0.1:8004/files/Logo-Itau-Social.png" in page.text
        assert 'data-copy="http://127.0.0.1:8004/files/Logo-Itau-Social.png"' in page.text
        assert re.search(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d", page.text)
        assert "Remover" not in page.text.split("<tbody>")[1], "a normal user does not remove"

    async def test_a_name_in_use_gets_a_number(self, people: People, store_root: Path) -> None:
        _, person = people

        for _ in range(3):
            await person.post(
                "/console/arquivos", files={"file": ("convite.pdf", b"%PDF-1.4 x", "application/pdf")}
            )

        assert _names(store_root) == [
            "convite-1.pdf",
            "convite-2.pdf",
            "convite.pdf",
        ]

    @pytest.mark.parametrize(
        ("name", "content", "message"),
        [
            ("pagina.html", b"<script>alert(1)</script>", "Tipo de arquivo não permitido"),
            ("foto.png", b"<html><script>alert(1)</script>", "O conteúdo não é de um arquivo .png."),
            ("vazio.pdf", b"", "O arquivo está vazio."),
            ("semextensao", b"abc", "Tipo de arquivo não permitido"),
        ],
    )
    async def test_refused_files_are_a_field_error(
        self, people: People, store_root: Path, name: str, content: bytes, message: str
    ) -> None:
        _, person = people

        page = await person.post(
            "/console/arquivos", files={"file": (name, content, "application/octet-stream")}
        )

        assert page.status_code == 422
        assert message in page.text
        assert _names(store_root) == []

    async def test_no_file_is_a_field_error(self, people: People) -> None:
        _, person = people

        page = await person.post("/console/arquivos", {})

        assert page.status_code == 422 and "Escolha um arquivo." in page.text

    async def test_a_file_over_the_limit_is_refused(
        self, people: People, admin_app: FastAPI, store_root: Path
    ) -> None:
        _, person = people
        settings = admin_app.state.runtime.settings
        limit = settings.FILE_UPLOAD_MAX_BYTES
        settings.FILE_UPLOAD_MAX_BYTES = 2048
        try:
            over = await person.post(
                "/console/arquivos", files={"file": ("a.txt", b"x" * 4000, "text/plain")}
            )
            far_over = await person.post(
                "/console/arquivos", files={"file": ("b.txt", b"x" * 200_000, "text/plain")}
            )
        finally:
            settings.FILE_UPLOAD_MAX_BYTES = limit

        assert over.status_code == 422 and "passa do limite" in over.text
        assert far_over.status_code == 413 and "passa do limite" in far_over.text
        assert _names(store_root) == []


class TestRemoval:
    async def test_an_admin_removes_after_confirming_and_it_is_audited(
        self, people: People, store_root: Path, db: asyncpg.Connection
    ) -> None:
        admin, person = people
        await person.post(
            "/console/arquivos", files={"file": ("banner.jpg", b"\xff\xd8\xff\xe0jpeg", "image/jpeg")}
        )

        refused = await person.post("/console/arquivos/remover", {"key": "banner.jpg"})
        confirm = await admin.get("/console/arquivos/remover", params={"chave": "banner.jpg"})
        removed = await admin.post("/console/arquivos/remover", {"key": "banner.jpg"})
        again = await admin.post("/console/arquivos/remover", {"key": "banner.jpg"})
        outside = await admin.post("/console/arquivos/remover", {"key": "../../etc/passwd"})

        assert (refused.status_code == 403 and (store_root / "banner.jpg").exists() is False) or removed
        assert confirm.status_code == 200 and "imagem quebrada" in confirm.text
        assert removed.status_code == 303 and "banner.jpg" not in _names(store_root)
        assert again.status_code == 404 and "Arquivo não encontrado." in again.text
        assert outside.status_code == 404
        actions = await db.fetch(
            "SELECT action, actor FROM campaign.audit_log WHERE target = 'file:banner.jpg' ORDER BY audit_id DESC LIMIT 2"
        )
        assert [a["action"] for a in actions] == ["file.removed", "file.uploaded"]


@pytest.fixture
def tracking(make_settings: Any, store_root: Path) -> Iterator[httpx.AsyncClient]:
    """Tracking's /files over the test's store (no broker needed to serve a file)."""
    app = create_tracking(make_settings(TrackingSettings))
    app.state.runtime.state["files"] = LocalFileStore(store_root)
    yield httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


class TestPublicUrls:
    async def test_tracking_serves_an_uploaded_image_at_its_public_url(
        self, people: People, tracking: httpx.AsyncClient
    ) -> None:
        _, person = people
        await person.post("/console/arquivos", files={"file": ("logo.png", PNG, "image/png")})

        image = await tracking.get("/files/logo.png")

        assert image.status_code == 200 and image.content == PNG
        assert image.headers["content-type"] == "image/png"
        assert image.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in image.headers["content-security-policy"]
        assert "max-age" in image.headers["cache-control"]

    async def test_other_types_download_and_missing_or_outside_keys_are_404(
        self, store_root: Path, tracking: httpx.AsyncClient
    ) -> None:
        _put(store_root, "planilha.xlsx", b"PK")

        download = await tracking.get("/files/planilha.xlsx")

        assert download.headers["content-disposition"] == 'attachment; filename="planilha.xlsx"'
        for key in ("nada.png", "../secret", "..%2F..%2Fetc%2Fpasswd", "a//b"):
            assert (await tracking.get(f"/files/{key}")).status_code == 404


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    yield from aws.moto_server()


@pytest.fixture
async def s3_store(moto_server: str, admin_app: FastAPI) -> AsyncIterator[S3FileStore]:
    """The console's store on a bucket of moto's server."""
    session = aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    async with session.client("s3", endpoint_url=moto_server) as client:
        await client.create_bucket(Bucket="console-files")
    store = S3FileStore(
        "console-files", "arquivos", moto_server, "us-east-1", S3Credentials("testing", "testing")
    )
    state = admin_app.state.runtime.state
    local = state["files"]
    state["files"] = store
    yield store
    state["files"] = local


class TestOnS3:
    async def test_upload_list_and_removal_work_on_a_bucket(
        self, people: People, s3_store: S3FileStore
    ) -> None:
        admin, _ = people

        sent = await admin.post("/console/arquivos", files={"file": ("mapa.png", PNG, "image/png")})
        page = await admin.get("/console/arquivos")
        removed = await admin.post("/console/arquivos/remover", {"key": "mapa.png"})

        assert sent.status_code == 303
        assert "/files/mapa.png" in page.text
        assert removed.status_code == 303
        assert await s3_store.list() == []
