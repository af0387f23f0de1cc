"""Campanhas: the campaign list (filter, sort, paging, live status), the per-row actions, the new
/ edit form with preview and test send, and the results screen.

Every action goes through `services.campaign.operations`, as the JSON API's do; the console only
reads forms, checks them in Portuguese and renders.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from services.campaign import operations
from services.campaign import repository as campaign_repo
from services.campaign.audience_client import AudienceClient, AudienceUnavailable
from services.campaign.console.identity import UserDep, settings_of
from services.campaign.console.repository import (
    CAMPAIGN_SORTS,
    CampaignListRepository,
    CampaignQuery,
    User,
)
from services.campaign.console.templating import render
from services.campaign.lifecycle import Status
from services.campaign.models import Campaign, CampaignChange, CampaignIn, ResultStatus, SenderAddress, Totals
from shared.contracts import AttachmentRef, Recipient
from shared.errors import Conflict
from shared.files import StoredFile, file_store
from shared.personalisation import BUILT_IN_VARIABLES, TemplateProblem, compile_html, referenced_variables
from shared.personalisation import render as render_template
from shared.service import Runtime, RuntimeDep

log = logging.getLogger(__name__)

router = APIRouter()

PAGE_SIZE = 25
RESULTS_PAGE_SIZE = 50
# Files offered in the form; a store with more is searched by key in the file manager.
MAX_FILES_LISTED = 500

STATUS_LABELS = {
    Status.DRAFT: "Rascunho",
    Status.QUEUED: "Na fila",
    Status.SENDING: "Enviando",
    Status.PAUSED: "Pausada",
    Status.COMPLETED: "Concluída",
    Status.CANCELLED: "Cancelada",
    Status.FAILED: "Falhou",
}
# Statuses that still change by themselves: their rows are polled.
LIVE = frozenset({Status.QUEUED, Status.SENDING, Status.PAUSED})

ACTIONS = {
    "iniciar": (operations.start, "Campanha {id} iniciada."),
    "pausar": (operations.pause, "Campanha {id} pausada."),
    "retomar": (operations.resume, "Campanha {id} retomada."),
    "cancelar": (operations.cancel, "Campanha {id} cancelada."),
}
# The operations' refusals, in Portuguese.
CONFLICTS = {
    "start": "Só uma campanha em rascunho pode ser iniciada.",
    "pause": "Só uma campanha na fila ou enviando pode ser pausada.",
    "resume": "Só uma campanha pausada pode ser retomada.",
    "cancel": "Esta campanha já terminou.",
    "inactive": "A conta de envio deste remetente está inativa.",
    "draft": "Só uma campanha em rascunho pode ser editada.",
}

RESULT_FILTERS: dict[str, str] = {
    "": "Todos",
    "sent": "Enviados",
    "failed": "Erros",
    "skipped": "Não enviados (descartados)",
    "indeterminate": "Indeterminados",
    "read": "Lidos",
    "unread": "Não lidos",
    "clicked": "Clicaram",
    "unsubscribed": "Inscrição cancelada",
    "unsubscribed_campaign": "Cancelaram nesta campanha",
    "unsubscribed_all": "Cancelaram campanhas futuras",
    "bounced": "Bounces",
    "complained": "Reclamações (spam)",
}
TRACKING_LABELS = {
    "full": "Completo (aberturas e cliques por destinatário)",
    "anonymous": "Anônimo (só totais)",
    "off": "Desligado",
}
PRIORITIES = [(9, "9 — mais alta"), *[(p, str(p)) for p in range(8, 5, -1)], (5, "5 — normal"),
              *[(p, str(p)) for p in range(4, 0, -1)], (0, "0 — mais baixa")]  # fmt: skip


def conflict_message(exc: Conflict) -> str:
    """A lifecycle refusal in Portuguese."""
    text = str(exc)
    for key in ("inactive", "draft"):
        if key in text:
            return CONFLICTS[key]
    match = re.match(r"cannot (\w+) ", text)
    return CONFLICTS.get(match.group(1), text) if match else text


def _audience(runtime: Runtime) -> AudienceClient:
    client: AudienceClient = runtime.state["audience"]
    return client


async def _groups(runtime: Runtime) -> tuple[list[dict[str, Any]], str | None]:
    """Audience's groups, or none and a message when audience does not answer."""
    try:
        return await _audience(runtime).list_groups(), None
    except AudienceUnavailable:
        log.warning("audience unavailable for the group list", exc_info=True)
        return [], "O serviço de grupos não respondeu; tente de novo em instantes."


async def _files(runtime: Runtime) -> list[StoredFile]:
    store = runtime.state.get("files")
    if store is None:
        store = runtime.state["files"] = file_store(settings_of(runtime).FILE_STORE_URL)
    try:
        files: list[StoredFile] = await store.list(MAX_FILES_LISTED)
    except Exception:
        log.warning("file store unavailable", exc_info=True)
        return []
    return files


async def _senders(runtime: Runtime, user: User) -> list[SenderAddress]:
    async with runtime.pool.acquire() as conn:
        senders = await campaign_repo.SenderAddressRepository(conn).list()
    return [s for s in senders if user.may_use_sender(s.sender_address_id)]


def _redirect_back(request: Request, message: str, error: bool = False) -> Response:
    request.session["flash"] = {"message": message, "error": error}
    target = request.headers.get("referer") or "/console/campanhas"
    # Only back to a console page of this site.
    path = re.sub(r"^https?://[^/]+", "", target)
    if not path.startswith("/console/"):
        path = "/console/campanhas"
    return RedirectResponse(path, status_code=303)


def _flash(request: Request) -> dict[str, Any] | None:
    flash: dict[str, Any] | None = request.session.pop("flash", None)
    return flash


# ----- the list ------------------------------------------------------------------------------


@router.get("/campanhas", response_class=HTMLResponse)
async def campaign_list(
    request: Request,
    runtime: RuntimeDep,
    user: UserDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    ordem: Annotated[str, Query(max_length=20)] = "id",
    sentido: Annotated[str, Query(max_length=4)] = "desc",
    pagina: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """The campaigns the user may see, newest first."""
    query = CampaignQuery(
        search=q or None,
        sort=ordem if ordem in CAMPAIGN_SORTS else "id",
        descending=sentido != "asc",
        limit=PAGE_SIZE,
        offset=(pagina - 1) * PAGE_SIZE,
    )
    async with runtime.pool.acquire() as conn:
        rows, total = await CampaignListRepository(conn).page(
            query, None if user.is_admin else user.sender_address_ids
        )
    context = {
        "rows": rows,
        "total": total,
        "query": query,
        "q": q or "",
        "page": pagina,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "labels": STATUS_LABELS,
        "live": LIVE,
        "flash": _flash(request),
    }
    partial = request.headers.get("HX-Target") == "campaign-table"
    return render(request, "campaigns/rows.html" if partial else "campaigns/list.html", context)


@router.get("/campanhas/{campaign_id}/linha", response_class=HTMLResponse)
async def campaign_row(
    request: Request, runtime: RuntimeDep, user: UserDep, campaign_id: int
) -> HTMLResponse:
    """One row of the list, polled while the campaign is live."""
    async with runtime.pool.acquire() as conn:
        await operations.get(conn, campaign_id, user.may_use_sender)
        row = await CampaignListRepository(conn).row(campaign_id)
    return render(request, "campaigns/row.html", {"row": row, "labels": STATUS_LABELS, "live": LIVE})


# ----- new / edit ----------------------------------------------------------------------------


@dataclass
class CampaignForm:
    """What the form holds (as typed), and its errors by field."""

    name: str = ""
    sender_address_id: str = ""
    group_ids: list[str] = field(default_factory=list)
    subject: str = ""
    html: str = ""
    text: str = ""
    priority: str = "5"
    tracking: str = "full"
    attachments: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def read(cls, request: Request) -> CampaignForm:
        """The form as posted."""
        form = await request.form()

        def text(name: str) -> str:
            value = form.get(name)
            return value if isinstance(value, str) else ""

        def many(name: str) -> list[str]:
            return [v for v in form.getlist(name) if isinstance(v, str)]

        return cls(
            name=text("name").strip(),
            sender_address_id=text("sender_address_id"),
            group_ids=many("group_ids"),
            subject=text("subject").strip(),
            html=text("html"),
            text=text("text"),
            priority=text("priority") or "5",
            tracking=text("tracking") or "full",
            attachments=many("attachments"),
            images=many("images"),
        )

    @classmethod
    async def of(cls, campaign: Campaign, files: list[AttachmentRef]) -> CampaignForm:
        """The form of a stored campaign."""
        return cls(
            name=campaign.name,
            sender_address_id=str(campaign.sender_address_id),
            group_ids=[str(g) for g in campaign.group_ids],
            subject=campaign.subject,
            html=campaign.html,
            text=campaign.text_body or "",
            priority=str(campaign.priority),
            tracking=campaign.tracking,
            attachments=[f.key for f in files if not f.inline],
            images=[f.key for f in files if f.inline],
        )

    def _int(self, name: str, value: str, message: str) -> int | None:
        try:
            return int(value)
        except ValueError:
            self.errors[name] = message
            return None

    def checked(self, user: User, known_files: set[str]) -> CampaignIn | None:
        """The campaign it describes, or None with `errors` filled in Portuguese."""
        if not self.name:
            self.errors["name"] = "Informe o nome da campanha."
        elif len(self.name) > 300:
            self.errors["name"] = "Use no máximo 300 caracteres."
        sender = self._int("sender_address_id", self.sender_address_id, "Escolha o remetente.")
        if sender is not None and not user.may_use_sender(sender):
            self.errors["sender_address_id"] = "Você não pode enviar com este remetente."
        groups = [
            g for g in (self._int("group_ids", g, "Grupo inválido.") for g in self.group_ids) if g is not None
        ]
        if not self.group_ids:
            self.errors["group_ids"] = "Escolha ao menos um grupo."
        elif len(set(groups)) > 50:
            self.errors["group_ids"] = "Escolha no máximo 50 grupos."
        if not self.subject:
            self.errors["subject"] = "Informe o assunto."
        elif len(self.subject) > 998:
            self.errors["subject"] = "Use no máximo 998 caracteres no assunto."
        if not self.html.strip():
            self.errors["html"] = "Escreva o corpo da mensagem (HTML)."
        elif len(self.html) > 2_000_000:
            self.errors["html"] = "O corpo da mensagem passa de 2 MB."
        if len(self.text) > 2_000_000:
            self.errors["text"] = "O texto alternativo passa de 2 MB."
        priority = self._int("priority", self.priority, "A prioridade vai de 0 a 9.")
        if priority is not None and not 0 <= priority <= 9:
            self.errors["priority"] = "A prioridade vai de 0 a 9."
        if self.tracking not in TRACKING_LABELS:
            self.errors["tracking"] = "Escolha uma opção de rastreamento."
        unknown = [k for k in [*self.attachments, *self.images] if k not in known_files]
        if unknown:
            self.errors["attachments"] = f"Arquivo não encontrado no gerenciador: {unknown[0]}"
        try:
            operations.check_templates(
                None if "subject" in self.errors else self.subject or None,
                None if "html" in self.errors else self.html or None,
                None if "text" in self.errors else self.text or None,
            )
        except operations.InvalidField as exc:
            self.errors[exc.field] = f"Erro no modelo: {exc.message}"
        if self.errors or sender is None or priority is None:
            return None
        try:
            return CampaignIn(
                name=self.name,
                sender_address_id=sender,
                group_ids=list(dict.fromkeys(groups)),
                subject=self.subject,
                html=self.html,
                text=self.text or None,
                priority=priority,
                tracking=self.tracking,
            )
        except ValidationError as exc:
            for error in exc.errors():
                self.errors[str(error["loc"][0])] = "Valor inválido."
            return None

    def files(self) -> list[AttachmentRef]:
        """The chosen files as the campaign sends them (images inline, by content id)."""
        refs = []
        for key in self.attachments:
            refs.append(
                AttachmentRef(key=key, filename=key.rsplit("/", 1)[-1], content_type=_content_type(key))
            )
        for key in self.images:
            refs.append(
                AttachmentRef(
                    key=key,
                    filename=key.rsplit("/", 1)[-1],
                    content_type=_content_type(key),
                    inline=True,
                    content_id=content_id(key),
                )
            )
        return refs

    def apply(self, exc: operations.InvalidField) -> None:
        """Show an operation's refusal next to its field, in Portuguese."""
        if exc.field == "group_ids":
            self.errors["group_ids"] = "Grupo inexistente: " + exc.message.rsplit(":", 1)[-1].strip()
        elif exc.field == "sender_address_id":
            self.errors["sender_address_id"] = "Remetente inexistente ou não permitido."
        else:
            self.errors[exc.field] = f"Erro no modelo: {exc.message}"


def _content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def content_id(key: str) -> str:
    """The `cid:` an inline image is shown by in the HTML (its key, made safe)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", key)[:100]


async def _form_page(
    request: Request,
    runtime: Runtime,
    user: User,
    form: CampaignForm,
    campaign: Campaign | None,
    status_code: int = 200,
    message: str | None = None,
) -> HTMLResponse:
    groups, groups_error = await _groups(runtime)
    files = await _files(runtime)
    fields = sorted({f for g in groups if str(g["group_id"]) in form.group_ids for f in g.get("fields", [])})
    return render(
        request,
        "campaigns/form.html",
        {
            "form": form,
            "campaign": campaign,
            "senders": await _senders(runtime, user),
            "groups": groups,
            "groups_error": groups_error,
            "files": files,
            "images": [f for f in files if _content_type(f.key).startswith("image/")],
            "content_id": content_id,
            "fields": ["nome", "email", "link_descadastro", *fields],
            "priorities": PRIORITIES,
            "tracking_labels": TRACKING_LABELS,
            "message": message,
            "flash": _flash(request),
        },
        status_code=status_code,
    )


@router.get("/campanhas/nova", response_class=HTMLResponse)
async def new_campaign(request: Request, runtime: RuntimeDep, user: UserDep) -> HTMLResponse:
    """The empty form."""
    senders = await _senders(runtime, user)
    form = CampaignForm(
        sender_address_id=str(senders[0].sender_address_id) if len(senders) == 1 else "",
        html="<p>Olá, {{ nome }}!</p>\n\n<p></p>\n\n"
        '<p style="font-size:12px;color:#777">Não quer mais receber? '
        '<a href="{{ link_descadastro }}">Cancele a inscrição</a>.</p>\n',
    )
    return await _form_page(request, runtime, user, form, None)


@router.post("/campanhas/nova", response_class=HTMLResponse)
async def create_campaign(request: Request, runtime: RuntimeDep, user: UserDep) -> Response:
    """Create the draft, or show the form again with the errors next to their fields."""
    form = await CampaignForm.read(request)
    body = form.checked(user, {f.key for f in await _files(runtime)})
    if body is not None:
        try:
            campaign = await operations.create(runtime, body, user.may_use_sender, form.files())
        except operations.InvalidField as exc:
            form.apply(exc)
        except AudienceUnavailable:
            return await _form_page(
                request, runtime, user, form, None, 503, "O serviço de grupos não respondeu; tente de novo."
            )
        else:
            request.session["flash"] = {"message": f"Campanha {campaign.campaign_id} criada.", "error": False}
            return RedirectResponse("/console/campanhas", status_code=303)
    return await _form_page(request, runtime, user, form, None, 422)


@router.get("/campanhas/{campaign_id}/editar", response_class=HTMLResponse)
async def edit_campaign_page(
    request: Request, runtime: RuntimeDep, user: UserDep, campaign_id: int
) -> HTMLResponse:
    """The form of a draft (a started campaign is shown read-only)."""
    async with runtime.pool.acquire() as conn:
        campaign = await operations.get(conn, campaign_id, user.may_use_sender)
        files = await campaign_repo.AttachmentRepository(conn).of(campaign_id)
    return await _form_page(request, runtime, user, await CampaignForm.of(campaign, files), campaign)


@router.post("/campanhas/{campaign_id}/editar", response_class=HTMLResponse)
async def edit_campaign(request: Request, runtime: RuntimeDep, user: UserDep, campaign_id: int) -> Response:
    """Save a draft's changes."""
    async with runtime.pool.acquire() as conn:
        campaign = await operations.get(conn, campaign_id, user.may_use_sender)
    form = await CampaignForm.read(request)
    body = form.checked(user, {f.key for f in await _files(runtime)})
    if body is not None:
        try:
            await operations.edit_draft(
                runtime,
                campaign_id,
                CampaignChange(
                    name=body.name,
                    subject=body.subject,
                    html=body.html,
                    text=body.text,
                    priority=body.priority,
                    tracking=body.tracking,
                ),
                user.may_use_sender,
                sender_address_id=body.sender_address_id,
                group_ids=body.group_ids,
                attachments=form.files(),
            )
        except operations.InvalidField as exc:
            form.apply(exc)
        except Conflict as exc:
            return await _form_page(request, runtime, user, form, campaign, 409, conflict_message(exc))
        except AudienceUnavailable:
            return await _form_page(
                request,
                runtime,
                user,
                form,
                campaign,
                503,
                "O serviço de grupos não respondeu; tente de novo.",
            )
        else:
            request.session["flash"] = {"message": f"Campanha {campaign_id} salva.", "error": False}
            return RedirectResponse("/console/campanhas", status_code=303)
    return await _form_page(request, runtime, user, form, campaign, 422)


@router.post("/campanhas/previa", response_class=HTMLResponse)
async def preview(request: Request, user: UserDep) -> HTMLResponse:
    """The HTML body rendered for the signed-in user (htmx, as the body is typed)."""
    form = await CampaignForm.read(request)
    problem = None
    html = ""
    try:
        template = compile_html(form.html or "")
        used = referenced_variables(form.html or "") - BUILT_IN_VARIABLES
        me = Recipient(recipient_id=1, email=user.email, name=user.name, fields={v: f"[{v}]" for v in used})
        html = render_template(template, me, "html", {"link_descadastro": "#"})
    except TemplateProblem as exc:
        problem = str(exc)
    return render(request, "campaigns/preview.html", {"html": html, "problem": problem})


@router.post("/campanhas/teste", response_class=HTMLResponse)
async def test_send(request: Request, runtime: RuntimeDep, user: UserDep) -> HTMLResponse:
    """Send the form's content to the user's own address (htmx; answers a message)."""
    form = await CampaignForm.read(request)
    form.name = form.name or "Teste"
    form.group_ids = form.group_ids or ["0"]  # groups play no part in a test send
    body = form.checked(user, {f.key for f in await _files(runtime)})
    form.errors.pop("group_ids", None)
    if body is None:
        fields = ", ".join(sorted(form.errors))
        return render(
            request,
            "campaigns/test_result.html",
            {"ok": False, "message": f"Corrija o formulário antes do teste ({fields})."},
        )
    try:
        campaign = await operations.test_send(
            runtime, body, user.may_use_sender, user.email, user.name, form.files()
        )
    except operations.InvalidField as exc:
        form.apply(exc)
        return render(request, "campaigns/test_result.html", {"ok": False, "message": form.errors[exc.field]})
    except Conflict as exc:
        return render(request, "campaigns/test_result.html", {"ok": False, "message": conflict_message(exc)})
    return render(
        request,
        "campaigns/test_result.html",
        {
            "ok": True,
            "message": f"Teste enviado para {user.email} (envio {campaign.campaign_id}); chega em instantes.",
        },
    )


# ----- results -------------------------------------------------------------------------------


@router.get("/campanhas/{campaign_id}/resultado", response_class=HTMLResponse)
async def results(
    request: Request,
    runtime: RuntimeDep,
    user: UserDep,
    campaign_id: int,
    q: Annotated[str | None, Query(max_length=320)] = None,
    situacao: Annotated[str, Query(max_length=30)] = "",
    apos: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    """Totals and per-recipient results, filtered, by keyset pages of recipient codes."""
    status: ResultStatus | None = situacao if situacao in RESULT_FILTERS and situacao else None  # type: ignore[assignment]
    where = campaign_repo.ResultFilter(q=q or None, status=status)
    async with runtime.pool.acquire() as conn:
        campaign = await operations.get(conn, campaign_id, user.may_use_sender)
        items = await campaign_repo.ResultRepository(conn).page(campaign_id, apos, RESULTS_PAGE_SIZE, where)
        sender = await campaign_repo.SenderAddressRepository(conn).get(campaign.sender_address_id)
    export = {"q": q or None, "status": status}
    context = {
        "campaign": campaign,
        "sender": sender,
        "totals": Totals.of(campaign),
        "items": items,
        "q": q or "",
        "situacao": situacao if status else "",
        "filters": RESULT_FILTERS,
        "after": apos,
        "next_after": items[-1].recipient_id if len(items) == RESULTS_PAGE_SIZE else None,
        "export_query": urlencode({k: v for k, v in export.items() if v}),
        "labels": STATUS_LABELS,
        "live": campaign.status in LIVE,
    }
    partial = request.headers.get("HX-Target") == "results"
    return render(request, "campaigns/results_body.html" if partial else "campaigns/results.html", context)


# Last: the generic action route must not shadow /campanhas/{id}/editar.
@router.post("/campanhas/{campaign_id}/{action}")
async def campaign_action(
    request: Request, runtime: RuntimeDep, user: UserDep, campaign_id: int, action: str
) -> Response:
    """Iniciar, pausar, retomar, cancelar (back to the page the user came from with a message)."""
    if action == "duplicar":
        return await _duplicate(request, runtime, user, campaign_id)
    if action not in ACTIONS:
        return render(
            request,
            "error.html",
            {"title": "Não encontrado", "message": "Ação desconhecida."},
            status_code=404,
        )
    operation, done = ACTIONS[action]
    try:
        await operation(runtime, campaign_id, user)
    except Conflict as exc:
        return _redirect_back(request, f"Campanha {campaign_id}: {conflict_message(exc)}", error=True)
    return _redirect_back(request, done.format(id=campaign_id))


async def _duplicate(request: Request, runtime: Runtime, user: User, campaign_id: int) -> Response:
    async with runtime.pool.acquire() as conn:
        original = await operations.get(conn, campaign_id, user.may_use_sender)
    copy = await operations.duplicate(runtime, campaign_id, user.may_use_sender, f"Cópia de {original.name}")
    request.session["flash"] = {
        "message": f"Campanha {campaign_id} duplicada como {copy.campaign_id}: revise e salve.",
        "error": False,
    }
    return RedirectResponse(f"/console/campanhas/{copy.campaign_id}/editar", status_code=303)
