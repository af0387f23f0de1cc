"""The file manager's files, served to recipients: `GET /files/<key>`.

Images in sent mail point here (the console shows these URLs as each file's public URL): tracking
is the one service every recipient reaches, and the store behind it (a local directory or a
private S3 bucket) stays unexposed. Files are public by design (anyone with the mail has the URL)
and immutable (the file manager never overwrites a key), so they are cached for a day. Nothing a
user uploaded runs here: types come from a fixed list by extension, never sniffed, and a
sandboxing Content-Security-Policy goes on every answer.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from shared.files import FileMissing, FileStore, check_key, file_store
from shared.service import Runtime, RuntimeDep

router = APIRouter()

# The types the file manager accepts; anything else is served as a download.
TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "pdf": "application/pdf",
    "txt": "text/plain; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}
_INLINE = frozenset({"png", "jpg", "jpeg", "gif", "webp", "pdf"})
_HEADERS = {
    "Cache-Control": "public, max-age=86400",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox",
    "Cross-Origin-Resource-Policy": "cross-origin",
}


def _store(runtime: Runtime) -> FileStore:
    store = runtime.state.get("files")
    if store is None:
        store = runtime.state["files"] = file_store(runtime.settings.FILE_STORE_URL)
    result: FileStore = store
    return result


@router.get("/files/{key:path}", include_in_schema=False)
async def serve_file(key: str, runtime: RuntimeDep) -> Response:
    """A stored file by its key (404 when there is none or the key is not a plain path)."""
    try:
        data = await _store(runtime).read(check_key(key))
    except (FileMissing, ValueError):
        return Response("arquivo não encontrado", status_code=404, media_type="text/plain; charset=utf-8")
    extension = key.rsplit(".", 1)[-1].lower() if "." in key else ""
    headers = dict(_HEADERS)
    if extension not in _INLINE:
        name = key.rsplit("/", 1)[-1].replace('"', "")
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return Response(data, media_type=TYPES.get(extension, "application/octet-stream"), headers=headers)
