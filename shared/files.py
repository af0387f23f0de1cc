"""The file store: files of the file manager (attachments, images), by key.

A local directory in development, an S3 bucket (through aioboto3) in production, chosen by
`FILE_STORE_URL`: `file:///var/lib/mailer/files` or `s3://bucket/prefix?region=…&endpoint_url=…`
(S3 credentials come from the usual AWS chain: environment, profile, pod role).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aioboto3
from botocore.exceptions import ClientError


class FileMissing(LookupError):
    """No file has this key in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no file {key!r} in the file store")
        self.key = key


class FileStore(Protocol):
    """Reads files by key; raises FileMissing when there is none."""

    async def read(self, key: str) -> bytes: ...


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


@dataclass(frozen=True)
class S3Credentials:
    """Explicit S3 credentials (otherwise the default AWS credential chain applies)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


class S3FileStore:
    """Files in an S3 bucket under a prefix (key `a/b.pdf` is object `<prefix>/a/b.pdf`)."""

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


def file_store(url: str) -> FileStore:
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
