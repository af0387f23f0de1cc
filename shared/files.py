"""The file store: files of the file manager (attachments, images), by key.

A local directory in development, an S3 bucket (through aioboto3) in production, chosen by
`FILE_STORE_URL`: `file:///var/lib/mailer/files` or `s3://bucket/prefix?region=…&endpoint_url=…`
(S3 credentials come from the usual AWS chain: environment, profile, pod role).

A file's public URL (what an image in a sent message points at) is `<public base>/<key>`: the
tracking service serves `/files/<key>` from either store, since it is the one service recipients
reach; a CDN or a public bucket can be put in front by setting the public base instead.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aioboto3
from botocore.exceptions import ClientError


class FileMissing(LookupError):
    """No file has this key in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no file {key!r} in the file store")
        self.key = key


class FileExists(Exception):
    """A file already has this key (a file is never overwritten: sent mail may point at it)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"a file {key!r} is already in the file store")
        self.key = key


@dataclass(frozen=True)
class StoredFile:
    """A file of the store as the file manager lists it."""

    key: str
    size: int
    modified_at: datetime


class FileStore(Protocol):
    """Reads files by key; raises FileMissing when there is none."""

    async def read(self, key: str) -> bytes: ...


class ManagedFileStore(FileStore, Protocol):
    """A store the file manager writes to, lists and deletes from."""

    async def write(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store a new file; FileExists if the key is taken."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether a file has this key."""
        ...

    async def delete(self, key: str) -> None:
        """Remove a file; FileMissing if there is none."""
        ...

    async def list(self, limit: int = 10_000) -> list[StoredFile]:
        """Files in key order, at most `limit`."""
        ...


def check_key(key: str) -> str:
    """The key if it is a plain relative path (no '..', no empty part, no control character);
    else ValueError. Both stores refuse the same keys, so a file never exists in one only."""
    parts = key.split("/")
    if (
        not key
        or len(key) > 512
        or key.startswith("/")
        or any(part in {"", ".", ".."} for part in parts)
        or any(ord(ch) < 32 or ch == "\x7f" or ch == "\\" for ch in key)
    ):
        raise ValueError(f"file key {key!r} is outside the file store")
    return key


def public_url(base_url: str, key: str) -> str:
    """The URL recipients fetch the file at: `base_url` (tracking's `/files`, or a CDN) + key."""
    return f"{base_url.rstrip('/')}/{quote(key)}"


class LocalFileStore:
    """Files under a directory; a key is a relative path that cannot leave it."""

    def __init__(self, root: Path | str) -> None:
        self._root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        # resolve() follows '..' and symbolic links, so neither can lead outside the root.
        path = (self._root / key).resolve()
        if "\x00" in key or not path.is_relative_to(self._root) or path == self._root:
            raise ValueError(f"file key {key!r} is outside the file store")
        return path

    async def read(self, key: str) -> bytes:
        """The file's bytes (read in a thread: a large file must not stall the event loop)."""
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise FileMissing(key) from exc

    def _new_path(self, key: str) -> Path:
        check_key(key)
        return self._path(key)

    async def write(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store a new file (never replacing one: the file is created exclusively)."""
        path = self._new_path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside and linked into place: a reader never sees half a file, and link()
            # fails if the name is taken, even by a concurrent writer.
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{id(data)}.part")
            temporary.write_bytes(data)
            try:
                os.link(temporary, path)
            except FileExistsError as exc:
                raise FileExists(key) from exc
            finally:
                temporary.unlink(missing_ok=True)

        await asyncio.to_thread(write)

    async def exists(self, key: str) -> bool:
        """Whether a file has this key."""
        return await asyncio.to_thread(self._new_path(key).is_file)

    async def delete(self, key: str) -> None:
        """Remove the file, and the directories it leaves empty."""
        path = self._new_path(key)

        def delete() -> None:
            try:
                if not path.is_file():
                    raise FileMissing(key)
                path.unlink()
            except FileNotFoundError as exc:
                raise FileMissing(key) from exc
            parent = path.parent
            while parent != self._root:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

        await asyncio.to_thread(delete)

    async def list(self, limit: int = 10_000) -> list[StoredFile]:
        """Files under the root in key order (hidden and partly written ones left out)."""

        def walk() -> list[StoredFile]:
            found = []
            if not self._root.is_dir():
                return []
            for directory, subdirectories, names in os.walk(self._root):
                subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
                for name in names:
                    if name.startswith("."):
                        continue
                    path = Path(directory) / name
                    if not path.is_file():
                        continue
                    stat = path.stat()
                    found.append(
                        StoredFile(
                            key=path.relative_to(self._root).as_posix(),
                            size=stat.st_size,
                            modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                        )
                    )
            found.sort(key=lambda f: f.key)
            return found[:limit]

        return await asyncio.to_thread(walk)


@dataclass(frozen=True)
class S3Credentials:
    """Explicit S3 credentials (otherwise the default AWS credential chain applies)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


class S3FileStore:
    """Files in an S3 bucket under a prefix (key `a/b.pdf` is object `<prefix>/a/b.pdf`)."""

    # Keys per listing request (S3's own maximum); tests make it small to page through a few.
    page_size = 1000

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        credentials: S3Credentials | None = None,
    ) -> None:
        self._bucket = bucket
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._endpoint_url = endpoint_url
        self._session = aioboto3.Session(
            region_name=region,
            aws_access_key_id=credentials.access_key_id if credentials else None,
            aws_secret_access_key=credentials.secret_access_key if credentials else None,
            aws_session_token=credentials.session_token if credentials else None,
        )

    async def read(self, key: str) -> bytes:
        """The object's bytes."""
        # A client per read: files are read once per campaign, not on a hot path.
        client: Any
        async with self._session.client("s3", endpoint_url=self._endpoint_url) as client:
            try:
                response = await client.get_object(Bucket=self._bucket, Key=self._prefix + key.lstrip("/"))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                    raise FileMissing(key) from exc
                raise
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data

    def _object(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def exists(self, key: str) -> bool:
        """Whether an object has this key."""
        client: Any
        async with self._session.client("s3", endpoint_url=self._endpoint_url) as client:
            return await self._exists(client, key)

    async def _exists(self, client: Any, key: str) -> bool:
        try:
            await client.head_object(Bucket=self._bucket, Key=self._object(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return False
            raise
        return True

    async def write(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store a new object; FileExists if the key is taken (checked first: S3 has no portable
        create-only put, and two uploads of one name in the same instant are not a real case)."""
        client: Any
        async with self._session.client("s3", endpoint_url=self._endpoint_url) as client:
            if await self._exists(client, key):
                raise FileExists(key)
            extra = {"ContentType": content_type} if content_type else {}
            await client.put_object(Bucket=self._bucket, Key=self._object(key), Body=data, **extra)

    async def delete(self, key: str) -> None:
        """Remove the object; FileMissing if there is none (S3's delete itself does not say)."""
        client: Any
        async with self._session.client("s3", endpoint_url=self._endpoint_url) as client:
            if not await self._exists(client, key):
                raise FileMissing(key)
            await client.delete_object(Bucket=self._bucket, Key=self._object(key))

    async def list(self, limit: int = 10_000) -> list[StoredFile]:
        """Objects under the prefix in key order (S3 lists in key order), at most `limit`."""
        found: list[StoredFile] = []
        client: Any
        async with self._session.client("s3", endpoint_url=self._endpoint_url) as client:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(
                Bucket=self._bucket, Prefix=self._prefix, PaginationConfig={"PageSize": self.page_size}
            ):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self._prefix) :]
                    if not key or key.endswith("/"):
                        continue
                    found.append(StoredFile(key=key, size=item["Size"], modified_at=item["LastModified"]))
                    if len(found) >= limit:
                        return found
        return found


def file_store(url: str) -> LocalFileStore | S3FileStore:
    """The store `FILE_STORE_URL` names (`file:///path` or `s3://bucket/prefix?region=…`)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in {"", "localhost"}:
            raise ValueError(f"FILE_STORE_URL {url!r}: a file URL names a local path (file:///path)")
        return LocalFileStore(unquote(parts.path))
    if parts.scheme == "s3" and parts.netloc:
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        return S3FileStore(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=query.get("endpoint_url"),
            region=query.get("region"),
        )
    raise ValueError(f"FILE_STORE_URL {url!r}: expected file:///path or s3://bucket/prefix")
