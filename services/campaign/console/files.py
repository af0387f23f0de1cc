"""Gerenciador de arquivos: images and attachments for campaigns, kept in the file store
(a local directory by default, S3 when FILE_STORE_URL says so; shared/files.py).

Every signed-in user uploads, lists and copies a file's public URL (to put an image in a
campaign); removing is for administrators (sent mail may point at the file) and audited, as
uploads are. Uploads are limited in size (FILE_UPLOAD_MAX_BYTES) and type: a fixed list of
extensions, and images must start like the image their extension names (no HTML or script
dressed as a picture). A file is never overwritten: a name in use gets a number.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from services.campaign.console.admin_support import Form, files_of
from services.campaign.console.audit import audit
from services.campaign.console.identity import AdminDep, UserDep, settings_of
from services.campaign.console.templating import render
from shared.files import FileExists, FileMissing, check_key, public_url
from shared.service import Runtime, RuntimeDep

router = APIRouter()

# Extension → content type of the files campaigns use.
TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "pdf": "application/pdf",
    "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt": "application/vnd.ms-powerpoint",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "txt": "text/plain; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "zip": "application/zip",
}
# How each kind of image begins.
_SIGNATURES = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpg": (b"\xff\xd8\xff",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "webp": (b"RIFF",),
    "pdf": (b"%PDF-",),
}
IMAGES = frozenset({"png", "jpg", "jpeg", "gif", "webp"})
_LISTED = 5000


def safe_name(filename: str) -> str:
    """A file name fit for a URL: accents dropped, spaces and symbols as '-', extension lower-case."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, extension = base.rpartition(".")
    if not dot:
        stem, extension = base, ""
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_stem).strip("-_")[:80] or "arquivo"
    return f"{cleaned}.{extension.lower()}" if extension else cleaned


def _numbered(name: str, number: int) -> str:
    stem, dot, extension = name.rpartition(".")
    return f"{stem}-{number}.{extension}" if dot else f"{name}-{number}"


def _base_url(runtime: Runtime) -> str:
    return settings_of(runtime).files_public_base_url


def _page(
    request: Request,
    runtime: RuntimeDep,
    files: list[dict[str, object]],
    form: Form,
    q: str,
    status_code: int = 200,
) -> HTMLResponse:
    limit = settings_of(runtime).FILE_UPLOAD_MAX_BYTES
    return render(
        request,
        "files/list.html",
        {
            "files": files,
            "form": form,
            "q": q,
            "max_mb": f"{limit / 2**20:g}".replace(".", ","),
            "extensions": ", ".join(f".{e}" for e in TYPES),
            "done": request.query_params.get("feito"),
        },
        status_code=status_code,
    )


async def _listing(runtime: Runtime, q: str) -> list[dict[str, object]]:
    stored = await files_of(runtime).list(limit=_LISTED)
    term = q.strip().lower()
    base = _base_url(runtime)
    rows: list[dict[str, object]] = [
        {
            "key": f.key,
            "size": f.size,
            "modified_at": f.modified_at,
            "url": public_url(base, f.key),
            "image": f.key.rsplit(".", 1)[-1].lower() in IMAGES,
        }
        for f in stored
        if not term or term in f.key.lower()
    ]
    rows.sort(key=lambda row: row["modified_at"], reverse=True)  # type: ignore[arg-type, return-value]
    return rows


@router.get("/arquivos", response_class=HTMLResponse)
async def file_list(
    request: Request,
    runtime: RuntimeDep,
    user: UserDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """The stored files, newest first, with their public URLs."""
    return _page(request, runtime, await _listing(runtime, q or ""), Form(), q or "")


def _check(upload: object, limit: int, form: Form) -> tuple[UploadFile, str] | None:
    if not isinstance(upload, UploadFile) or not upload.filename:
        form.errors["file"] = "Escolha um arquivo."
        return None
    name = safe_name(upload.filename)
    extension = name.rsplit(".", 1)[-1] if "." in name else ""
    if extension not in TYPES:
        form.errors["file"] = (
            "Tipo de arquivo não permitido. Envie imagens, PDF, documentos do Office, texto ou ZIP."
        )
        return None
    if upload.size is not None and upload.size > limit:
        form.errors["file"] = f"O arquivo passa do limite de {limit / 2**20:g} MB.".replace(".", ",", 1)
        return None
    if not upload.size:
        form.errors["file"] = "O arquivo está vazio."
        return None
    return upload, name


@router.post("/arquivos", response_model=None)
async def upload(request: Request, runtime: RuntimeDep, user: UserDep) -> Response:
    """Store an uploaded file under a free name (audited)."""
    limit = settings_of(runtime).FILE_UPLOAD_MAX_BYTES
    form = Form()
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + 64 * 1024:
        form.errors["file"] = f"O arquivo passa do limite de {limit / 2**20:g} MB.".replace(".", ",", 1)
        return _page(request, runtime, await _listing(runtime, ""), form, "", status_code=413)
    checked = _check((await request.form()).get("file"), limit, form)
    if checked is None:
        return _page(request, runtime, await _listing(runtime, ""), form, "", status_code=422)
    file, name = checked
    data = await file.read(limit + 1)
    extension = name.rsplit(".", 1)[-1]
    if len(data) > limit:
        form.errors["file"] = f"O arquivo passa do limite de {limit / 2**20:g} MB.".replace(".", ",", 1)
    elif extension in _SIGNATURES and not data.startswith(_SIGNATURES[extension]):
        form.errors["file"] = f"O conteúdo não é de um arquivo .{extension}."
    if not form.ok:
        return _page(request, runtime, await _listing(runtime, ""), form, "", status_code=422)
    store = files_of(runtime)
    key = name
    for number in range(1, 1000):
        try:
            check_key(key)
            await store.write(key, data, TYPES[extension])
            break
        except FileExists:
            key = _numbered(name, number)
    else:
        form.errors["file"] = "Já existem arquivos demais com este nome; renomeie o arquivo."
        return _page(request, runtime, await _listing(runtime, ""), form, "", status_code=409)
    async with runtime.transaction() as conn:
        await audit(conn, user, "file.uploaded", f"file:{key}", size=len(data))
    return RedirectResponse(f"/console/arquivos?feito=enviado&q={key}", status_code=303)


@router.get("/arquivos/remover", response_class=HTMLResponse)
async def remove_form(
    request: Request,
    runtime: RuntimeDep,
    admin: AdminDep,
    chave: Annotated[str, Query(min_length=1, max_length=512)],
) -> HTMLResponse:
    """Confirmation of a file's removal."""
    return render(request, "files/remove.html", {"key": chave, "url": public_url(_base_url(runtime), chave)})


@router.post("/arquivos/remover", response_model=None)
async def remove(request: Request, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Delete a file (audited); messages already sent that show it lose the image."""
    form = await Form.read(request)
    key = form.text("key", required="Informe o arquivo.", max_length=512)
    if form.ok:
        try:
            await files_of(runtime).delete(key)
        except (FileMissing, ValueError):
            form.errors["key"] = "Arquivo não encontrado."
    if not form.ok:
        return render(
            request,
            "files/remove.html",
            {"key": key, "url": public_url(_base_url(runtime), key), "form": form},
            status_code=404,
        )
    async with runtime.transaction() as conn:
        await audit(conn, admin, "file.removed", f"file:{key}")
    return RedirectResponse("/console/arquivos?feito=removido", status_code=303)
