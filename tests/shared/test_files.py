"""The file store: a local directory that keys cannot leave, and S3 on moto's server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aioboto3
import httpx
import pytest

from shared.files import (
    FileExists,
    FileMissing,
    LocalFileStore,
    S3Credentials,
    S3FileStore,
    check_key,
    file_store,
    public_url,
)
from tests import aws

REGION = "us-east-1"
BUCKET = "mailer-files"
CREDENTIALS = S3Credentials(access_key_id="testing", secret_access_key="testing")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "store" / "campanhas").mkdir(parents=True)
    (tmp_path / "store" / "campanhas" / "relatório.pdf").write_bytes(b"%PDF-1.4 conteudo")
    (tmp_path / "secret.txt").write_text("outside the store")
    return tmp_path / "store"


class TestLocalFileStore:
    async def test_reads_a_file_by_its_relative_key(self, root: Path) -> None:
        assert await LocalFileStore(root).read("campanhas/relatório.pdf") == b"%PDF-1.4 conteudo"

    async def test_a_missing_file_is_file_missing_naming_the_key(self, root: Path) -> None:
        with pytest.raises(FileMissing, match=r"campanhas/nada\.pdf") as caught:
            await LocalFileStore(root).read("campanhas/nada.pdf")
        assert caught.value.key == "campanhas/nada.pdf"

    async def test_a_directory_is_no_file(self, root: Path) -> None:
        with pytest.raises(FileMissing):
            await LocalFileStore(root).read("campanhas")

    @pytest.mark.parametrize("key", ["../secret.txt", "campanhas/../../secret.txt", "/etc/passwd", "", "."])
    async def test_keys_that_leave_the_root_are_refused(self, root: Path, key: str) -> None:
        with pytest.raises(ValueError, match="outside the file store"):
            await LocalFileStore(root).read(key)

    async def test_a_symbolic_link_out_of_the_root_is_refused(self, root: Path) -> None:
        (root / "atalho.txt").symlink_to(root.parent / "secret.txt")

        with pytest.raises(ValueError, match="outside the file store"):
            await LocalFileStore(root).read("atalho.txt")


class TestLocalFileManagement:
    async def test_a_written_file_is_read_listed_and_deleted(self, root: Path) -> None:
        store = LocalFileStore(root)

        await store.write("imagens/logo nova.png", b"\x89PNG")

        assert await store.read("imagens/logo nova.png") == b"\x89PNG"
        assert await store.exists("imagens/logo nova.png")
        listed = await store.list()
        assert [(f.key, f.size) for f in listed] == [
            ("campanhas/relatório.pdf", len(b"%PDF-1.4 conteudo")),
            ("imagens/logo nova.png", 4),
        ]
        await store.delete("imagens/logo nova.png")
        assert not await store.exists("imagens/logo nova.png")
        assert not (root / "imagens").exists(), "an emptied directory goes too"

    async def test_a_file_is_never_overwritten(self, root: Path) -> None:
        store = LocalFileStore(root)

        with pytest.raises(FileExists):
            await store.write("campanhas/relatório.pdf", b"outro")
        assert await store.read("campanhas/relatório.pdf") == b"%PDF-1.4 conteudo"
        assert not [p for p in (root / "campanhas").iterdir() if p.name.startswith(".")]

    async def test_deleting_a_missing_file_is_file_missing(self, root: Path) -> None:
        with pytest.raises(FileMissing):
            await LocalFileStore(root).delete("campanhas/nada.pdf")

    async def test_a_missing_root_lists_nothing(self, tmp_path: Path) -> None:
        assert await LocalFileStore(tmp_path / "ainda-nao").list() == []

    async def test_the_list_stops_at_its_limit(self, root: Path) -> None:
        store = LocalFileStore(root)
        for name in ("a.txt", "b.txt"):
            await store.write(name, b"x")

        assert [f.key for f in await store.list(limit=2)] == ["a.txt", "b.txt"]

    @pytest.mark.parametrize("key", ["../fora.txt", "a//b.txt", "./a.txt", "/abs.txt", "a\\b.txt", "a\nb"])
    async def test_unsafe_keys_are_refused_for_writing(self, root: Path, key: str) -> None:
        with pytest.raises(ValueError, match="outside the file store"):
            await LocalFileStore(root).write(key, b"x")


class TestKeysAndPublicUrls:
    def test_a_plain_relative_key_passes(self) -> None:
        assert check_key("imagens/2026/logo.png") == "imagens/2026/logo.png"

    def test_the_public_url_quotes_the_key_under_the_base(self) -> None:
        assert (
            public_url("https://t.example.org/files/", "imagens/logo nova é.png")
            == "https://t.example.org/files/imagens/logo%20nova%20%C3%A9.png"
        )


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """moto's AWS server, for the whole module."""
    yield from aws.moto_server()


@pytest.fixture
async def s3(moto_server: str) -> AsyncIterator[Any]:
    """An emptied moto with our bucket, and a client of our own to put objects in it."""
    async with httpx.AsyncClient() as http:
        (await http.post(f"{moto_server}/moto-api/reset")).raise_for_status()
    session = aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    async with session.client("s3", endpoint_url=moto_server) as client:
        await client.create_bucket(Bucket=BUCKET)
        yield client


class TestS3FileStore:
    async def test_reads_an_object_under_the_prefix(self, s3: Any, moto_server: str) -> None:
        await s3.put_object(Bucket=BUCKET, Key="arquivos/campanhas/logo.png", Body=b"\x89PNG dados")
        store = S3FileStore(BUCKET, "/arquivos/", moto_server, REGION, CREDENTIALS)

        assert await store.read("campanhas/logo.png") == b"\x89PNG dados"

    async def test_without_a_prefix_the_key_is_the_object_key(self, s3: Any, moto_server: str) -> None:
        await s3.put_object(Bucket=BUCKET, Key="logo.png", Body=b"png")

        assert await S3FileStore(BUCKET, "", moto_server, REGION, CREDENTIALS).read("logo.png") == b"png"

    async def test_a_missing_object_is_file_missing(self, s3: Any, moto_server: str) -> None:
        store = S3FileStore(BUCKET, "arquivos", moto_server, REGION, CREDENTIALS)

        with pytest.raises(FileMissing, match=r"nada\.pdf"):
            await store.read("nada.pdf")

    async def test_a_missing_bucket_is_not_mistaken_for_a_missing_file(
        self, s3: Any, moto_server: str
    ) -> None:
        store = S3FileStore("no-such-bucket", "", moto_server, REGION, CREDENTIALS)

        with pytest.raises(Exception) as caught:
            await store.read("logo.png")
        assert not isinstance(caught.value, FileMissing)


class TestS3FileManagement:
    async def test_a_written_object_is_read_listed_and_deleted(self, s3: Any, moto_server: str) -> None:
        store = S3FileStore(BUCKET, "arquivos", moto_server, REGION, CREDENTIALS)
        await s3.put_object(Bucket=BUCKET, Key="outro-prefixo/x.txt", Body=b"not ours")

        await store.write("imagens/logo.png", b"\x89PNG", "image/png")
        await store.write("a.pdf", b"%PDF")

        head = await s3.head_object(Bucket=BUCKET, Key="arquivos/imagens/logo.png")
        assert head["ContentType"] == "image/png"
        assert await store.read("imagens/logo.png") == b"\x89PNG"
        assert [(f.key, f.size) for f in await store.list()] == [("a.pdf", 4), ("imagens/logo.png", 4)]
        await store.delete("a.pdf")
        assert not await store.exists("a.pdf")
        assert [f.key for f in await store.list()] == ["imagens/logo.png"]

    async def test_an_object_is_never_overwritten(self, s3: Any, moto_server: str) -> None:
        store = S3FileStore(BUCKET, "", moto_server, REGION, CREDENTIALS)
        await store.write("logo.png", b"first")

        with pytest.raises(FileExists):
            await store.write("logo.png", b"second")
        assert await store.read("logo.png") == b"first"

    async def test_deleting_a_missing_object_is_file_missing(self, s3: Any, moto_server: str) -> None:
        with pytest.raises(FileMissing):
            await S3FileStore(BUCKET, "", moto_server, REGION, CREDENTIALS).delete("nada.png")

    async def test_the_list_pages_through_many_objects_and_stops_at_its_limit(
        self, s3: Any, moto_server: str
    ) -> None:
        store = S3FileStore(BUCKET, "p", moto_server, REGION, CREDENTIALS)
        store.page_size = 2
        for i in range(5):
            await s3.put_object(Bucket=BUCKET, Key=f"p/{i:04}.txt", Body=b"x")

        assert len(await store.list()) == 5
        assert [f.key for f in await store.list(limit=3)] == ["0000.txt", "0001.txt", "0002.txt"]

    async def test_unsafe_keys_are_refused(self, s3: Any, moto_server: str) -> None:
        with pytest.raises(ValueError, match="outside the file store"):
            await S3FileStore(BUCKET, "p", moto_server, REGION, CREDENTIALS).write("../x", b"x")


class TestFileStoreFromUrl:
    async def test_a_file_url_is_a_local_store_at_its_path(self, root: Path) -> None:
        store = file_store(f"file://{root}")

        assert isinstance(store, LocalFileStore)
        assert await store.read("campanhas/relatório.pdf") == b"%PDF-1.4 conteudo"

    async def test_an_s3_url_names_bucket_prefix_region_and_endpoint(
        self, s3: Any, moto_server: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Credentials come from the usual AWS chain, here the environment.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        await s3.put_object(Bucket=BUCKET, Key="arquivos/a.txt", Body=b"a")

        store = file_store(f"s3://{BUCKET}/arquivos?region={REGION}&endpoint_url={moto_server}")

        assert isinstance(store, S3FileStore)
        assert await store.read("a.txt") == b"a"

    @pytest.mark.parametrize("url", ["ftp://host/files", "s3:///prefix", "file://otherhost/files", "files"])
    def test_anything_else_is_refused(self, url: str) -> None:
        with pytest.raises(ValueError, match="FILE_STORE_URL"):
            file_store(url)
