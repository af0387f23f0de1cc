"""Grupos: recipient groups, owned by the audience service and reached over its internal HTTP API
(campaign never reads audience's tables). A group is static (addresses typed in), CSV (a file
uploaded, its rejected lines downloadable as an error report) or remote (a URL read page by page
when a campaign starts, previewed here).

Every signed-in user sees groups and creates them (campaigns need them); renaming and removing
are for administrators and audited. Uploads are limited in type (.csv / .txt) and size
(CSV_UPLOAD_MAX_BYTES); a request announcing more is refused before it is read.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from services.campaign.audience_client import AudienceUnavailable
from services.campaign.console.admin_support import Form, IdPath, audience_of, unavailable
from services.campaign.console.audit import audit
from services.campaign.console.identity import AdminDep, UserDep, settings_of
from services.campaign.console.templating import render
from shared.errors import NotFound
from shared.service import Runtime, RuntimeDep

router = APIRouter()

KINDS = {"static": "Estático", "csv": "Arquivo CSV", "remote": "URL remota"}
# Typed-in members: at most this many lines (larger lists go by CSV).
MAX_TYPED_MEMBERS = 5_000
CSV_SUFFIXES = (".csv", ".txt")
CSV_TYPES = {
    "text/csv",
    "text/plain",
    "application/csv",
    "application/vnd.ms-excel",
    "application/octet-stream",
    "",
}
_CHUNK = 256 * 1024
_SERVICE = "grupos (audience)"
_ANGLE = re.compile(r"^\s*(?P<name>.*?)\s*<(?P<email>[^<>]+)>\s*$")


def _parse_members(text: str) -> tuple[list[dict[str, str]], list[str]]:
    """Members typed one per line as `e-mail`, `Nome <e-mail>`, `Nome;e-mail` or `e-mail;Nome`;
    the problems found, each naming its line."""
    members: list[dict[str, str]] = []
    problems: list[str] = []
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_TYPED_MEMBERS:
        return [], [
            f"Digite no máximo {MAX_TYPED_MEMBERS:,} linhas; para mais, use um arquivo CSV.".replace(",", ".")
        ]
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _ANGLE.match(line)
        if match:
            name, email = match["name"].strip().strip('"'), match["email"].strip()
        else:
            parts = [p.strip() for p in re.split(r"[;,\t]", line, maxsplit=1)]
            if len(parts) == 2 and "@" in parts[0] and "@" not in parts[1]:
                email, name = parts
            elif len(parts) == 2:
                name, email = parts
            else:
                name, email = "", parts[0]
        try:
            normalised = validate_email(email, check_deliverability=False).normalized
        except EmailNotValidError:
            problems.append(f"Linha {number}: e-mail inválido ({email[:80]}).")
            continue
        members.append({"email": normalised, "name": name[:300]})
    return members, problems


def _dated(value: Any) -> Any:
    """Audience's JSON with its `*_at` timestamps as datetimes (for the date filters), recursively."""
    if isinstance(value, list):
        return [_dated(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key.endswith("_at") and isinstance(item, str):
                try:
                    out[key] = datetime.fromisoformat(item)
                    continue
                except ValueError:
                    pass
            out[key] = _dated(item)
        return out
    return value


def _detail(answer: Any) -> str:
    """Audience's refusal as a sentence (its own texts for users are in Portuguese)."""
    detail = answer.get("detail") if isinstance(answer, dict) else answer
    if isinstance(detail, list) and detail:
        message = str(detail[0].get("msg", "")) if isinstance(detail[0], dict) else str(detail[0])
        return message.removeprefix("Value error, ")
    return str(detail or "recusado pelo serviço de grupos")


@router.get("/grupos", response_class=HTMLResponse)
async def group_list(
    request: Request,
    runtime: RuntimeDep,
    user: UserDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """Every group with its kind and member count, filtered by name or id."""
    try:
        groups = _dated(await audience_of(runtime).list_groups())
    except AudienceUnavailable:
        return unavailable(request, _SERVICE)
    term = (q or "").strip().lower()
    if term:
        groups = [g for g in groups if term in g["name"].lower() or term == str(g["group_id"])]
    groups.sort(key=lambda g: g["group_id"], reverse=True)
    return render(
        request,
        "groups/list.html",
        {"groups": groups, "q": q or "", "kinds": KINDS, "done": request.query_params.get("feito")},
    )


def _form_page(request: Request, form: Form, status_code: int = 200) -> HTMLResponse:
    limit = settings_of(request.app.state.runtime).CSV_UPLOAD_MAX_BYTES
    return render(
        request,
        "groups/new.html",
        {"form": form, "kinds": KINDS, "max_mb": limit // (1024 * 1024)},
        status_code=status_code,
    )


@router.get("/grupos/novo", response_class=HTMLResponse)
async def new_group_form(request: Request, user: UserDep) -> HTMLResponse:
    """The new group form."""
    return _form_page(request, Form({"kind": "static"}))


def _too_large(request: Request, limit: int) -> bool:
    length = request.headers.get("content-length", "")
    return length.isdigit() and int(length) > limit + 64 * 1024


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_CHUNK):
        yield chunk


def _check_upload(form: Form, upload: object, limit: int) -> UploadFile | None:
    """The uploaded CSV if it is one within the limits; else a field error on `file`."""
    if not isinstance(upload, UploadFile) or not upload.filename:
        form.errors["file"] = "Escolha o arquivo CSV."
        return None
    if not upload.filename.lower().endswith(CSV_SUFFIXES) or (upload.content_type or "") not in CSV_TYPES:
        form.errors["file"] = "Envie um arquivo .csv ou .txt (texto separado por ; ou ,)."
        return None
    if upload.size is not None and upload.size > limit:
        form.errors["file"] = f"O arquivo passa do limite de {limit // (1024 * 1024)} MB."
        return None
    if upload.size == 0:
        form.errors["file"] = "O arquivo está vazio."
        return None
    return upload


@router.post("/grupos/novo", response_model=None)
async def create_group(request: Request, runtime: RuntimeDep, user: UserDep) -> Response:
    """Create a static, CSV or remote group in audience; field errors keep what was typed."""
    limit = settings_of(runtime).CSV_UPLOAD_MAX_BYTES
    if _too_large(request, limit):
        form = Form({"kind": "csv"}, {"file": f"O arquivo passa do limite de {limit // (1024 * 1024)} MB."})
        return _form_page(request, form, status_code=413)
    form = await Form.read(request)
    name = form.text("name", required="Dê um nome ao grupo.")
    kind = form.text("kind")
    body: dict[str, Any] = {"name": name, "kind": kind}
    upload: UploadFile | None = None
    if kind == "static":
        members, problems = _parse_members(str(form.values.get("members", "")))
        if problems:
            form.errors["members"] = " ".join(problems[:5]) + (
                f" (e mais {len(problems) - 5} linhas)" if len(problems) > 5 else ""
            )
        elif not members:
            form.errors["members"] = "Digite ao menos um e-mail, um por linha."
        body["members"] = members
    elif kind == "remote":
        url = form.text("url", required="Informe a URL do grupo.", max_length=2000)
        if url and not url.lower().startswith(("https://", "http://")):
            form.errors["url"] = "Use uma URL http(s)://."
        body["url"] = url
    elif kind == "csv":
        upload = _check_upload(form, (await request.form()).get("file"), limit)
    else:
        form.errors["kind"] = "Escolha o tipo do grupo."
    if not form.ok:
        return _form_page(request, form, status_code=422)
    audience = audience_of(runtime)
    try:
        code, answer = await audience.create_group(body)
        if code == 422:
            loc = answer["detail"][0].get("loc", []) if isinstance(answer.get("detail"), list) else []
            field = "url" if "url" in loc else "members" if "members" in loc else "name"
            form.errors[field] = _detail(answer)
            return _form_page(request, form, status_code=422)
        if code != 201:
            form.errors["name"] = _detail(answer)
            return _form_page(request, form, status_code=422)
        group_id = int(answer["group_id"])
        if upload is not None:
            code, result = await audience.upload_csv(
                group_id, _chunks(upload), upload.filename or "grupo.csv"
            )
            if code != 201:
                # The empty group would only confuse: the user fixes the file and tries again.
                await audience.delete_group(group_id)
                form.errors["file"] = (
                    f"O arquivo passa do limite de {limit // (1024 * 1024)} MB."
                    if code == 413
                    else f"Arquivo não importado: {_detail(result)}"
                )
                return _form_page(request, form, status_code=422)
    except AudienceUnavailable:
        return unavailable(request, _SERVICE)
    return RedirectResponse(f"/console/grupos/{group_id}?feito=criado", status_code=303)


async def _group(runtime: Runtime, group_id: int) -> dict[str, Any]:
    code, group = await audience_of(runtime).get_group(group_id)
    if code == 404 or code == 422:
        raise NotFound(f"group {group_id} not found")
    if code != 200:
        raise AudienceUnavailable(f"audience answered {code}")
    result: dict[str, Any] = _dated(group)
    return result


@router.get("/grupos/{group_id}", response_class=HTMLResponse)
async def group_page(group_id: IdPath, request: Request, runtime: RuntimeDep, user: UserDep) -> HTMLResponse:
    """A group: its count, first members (a remote group's first page) and import errors."""
    try:
        group = await _group(runtime, group_id)
        code, preview = await audience_of(runtime).preview(group_id, limit=20)
    except AudienceUnavailable:
        return unavailable(request, _SERVICE)
    return render(
        request,
        "groups/show.html",
        {
            "group": group,
            "preview": _dated(preview) if code == 200 else None,
            "kinds": KINDS,
            "done": request.query_params.get("feito"),
            "max_mb": settings_of(runtime).CSV_UPLOAD_MAX_BYTES // (1024 * 1024),
            "form": Form(),
        },
    )


@router.post("/grupos/{group_id}/csv", response_model=None)
async def upload_csv(group_id: IdPath, request: Request, runtime: RuntimeDep, user: UserDep) -> Response:
    """Import another CSV file into a CSV group (its members are added; repeated ones kept once)."""
    limit = settings_of(runtime).CSV_UPLOAD_MAX_BYTES
    form = Form()
    upload = None
    if _too_large(request, limit):
        form.errors["file"] = f"O arquivo passa do limite de {limit // (1024 * 1024)} MB."
    else:
        upload = _check_upload(form, (await request.form()).get("file"), limit)
    try:
        group = await _group(runtime, group_id)
        if upload is not None:
            code, result = await audience_of(runtime).upload_csv(
                group_id, _chunks(upload), upload.filename or "grupo.csv"
            )
            if code == 201:
                return RedirectResponse(f"/console/grupos/{group_id}?feito=importado", status_code=303)
            form.errors["file"] = f"Arquivo não importado: {_detail(result)}"
        _, preview = await audience_of(runtime).preview(group_id, limit=20)
        preview = _dated(preview)
    except AudienceUnavailable:
        return unavailable(request, _SERVICE)
    return render(
        request,
        "groups/show.html",
        {
            "group": group,
            "preview": preview,
            "kinds": KINDS,
            "done": None,
            "form": form,
            "max_mb": limit // 2**20,
        },
        status_code=413 if _too_large(request, limit) else 422,
    )


@router.get("/grupos/{group_id}/erros.csv", response_model=None)
async def import_errors(group_id: IdPath, request: Request, runtime: RuntimeDep, user: UserDep) -> Response:
    """The rejected lines of the group's last CSV import, downloaded as CSV (streamed through)."""
    audience = audience_of(runtime)
    try:
        await _group(runtime, group_id)
        stream = audience.import_errors(group_id)
        response = await stream.__aenter__()
    except AudienceUnavailable:
        return unavailable(request, _SERVICE)
    if response is None:
        await stream.__aexit__(None, None, None)
        raise NotFound(f"group {group_id} has no import")

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        finally:
            await stream.__aexit__(None, None, None)

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="erros-grupo-{group_id}.csv"'},
    )


@router.get("/grupos/{group_id}/renomear", response_class=HTMLResponse)
async def rename_form(
    group_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> HTMLResponse:
    """The rename form."""
    try:
        group = await _group(runtime, group_id)
    except AudienceUnavailable:
        return unavailable(request, _SERVICE)
    return render(request, "groups/rename.html", {"group": group, "form": Form({"name": group["name"]})})


@router.post("/grupos/{group_id}/renomear", response_model=None)
async def rename(group_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Rename a group (audited)."""
    form = await Form.read(request)
    name = form.text("name", required="Dê um nome ao grupo.")
    try:
        group = await _group(runtime, group_id)
        if form.ok:
            code, answer = await audience_of(runtime).rename_group(group_id, name)
            if code != 200:
                form.errors["name"] = _detail(answer)
    except AudienceUnavailable:
        return unavailable(request, _SERVICE)
    if not form.ok:
        return render(request, "groups/rename.html", {"group": group, "form": form}, status_code=422)
    async with runtime.transaction() as conn:
        await audit(conn, admin, "group.renamed", f"group:{group_id}", before=group["name"], after=name)
    return RedirectResponse(f"/console/grupos/{group_id}?feito=renomeado", status_code=303)


@router.get("/grupos/{group_id}/remover", response_class=HTMLResponse)
async def remove_form(
    group_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> HTMLResponse:
    """Confirmation of a group's removal."""
    try:
        group = await _group(runtime, group_id)
    except AudienceUnavailable:
        return unavailable(request, _SERVICE)
    return render(request, "groups/remove.html", {"group": group})


@router.post("/grupos/{group_id}/remover", response_model=None)
async def remove(group_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Delete a group with its members (audited); campaigns already resolved keep their recipients."""
    try:
        group = await _group(runtime, group_id)
        await audience_of(runtime).delete_group(group_id)
    except AudienceUnavailable:
        return unavailable(request, _SERVICE)
    async with runtime.transaction() as conn:
        await audit(conn, admin, "group.removed", f"group:{group_id}", name=group["name"], kind=group["kind"])
    return RedirectResponse("/console/grupos?feito=removido", status_code=303)
