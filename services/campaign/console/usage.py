"""Exibir uso das contas: per sending account, what it sent in the last 24 hours against its quota,
its bounce and complaint rates against its thresholds (with a chart of the rates over time, an
SVG drawn here: no script library), whether and until when it is paused, the campaign it is
sending and the queue behind it.

The rates, the brake's pause and the admin override come from the bounce service's API; what was
sent and what is queued from campaign's own results. Bounce being away costs the rates, not the
page. Normal users see the accounts of their sender addresses; administrators see all and may
override the brake: a deliberate, confirmed decision (the confirmation repeats the manual's
warning about the provider's probation), recorded in bounce's log and in the audit log.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup, escape

from services.campaign import repository as campaign_repo
from services.campaign.bounce_client import BounceUnavailable, OverrideRefused, Reading, Reputation
from services.campaign.console.admin_repository import QueuedCampaign, UsageRepository
from services.campaign.console.admin_support import Form, IdPath, bounce_of
from services.campaign.console.audit import audit
from services.campaign.console.identity import AdminDep, UserDep
from services.campaign.console.templating import SAO_PAULO, render
from services.campaign.models import Account
from shared.errors import NotFound
from shared.service import RuntimeDep

router = APIRouter()

PERIODS = {24: "24 horas", 168: "7 dias", 720: "30 dias"}
# How long an override may last, as offered on its form (0: until switched off).
OVERRIDE_HOURS = {1: "1 hora", 6: "6 horas", 24: "24 horas", 72: "3 dias", 0: "Até ser desligado"}
_BASE = "/console/uso-das-contas"


@dataclass
class AccountUsage:
    """One account's card."""

    account: Account
    sent_24h: int
    queue: list[QueuedCampaign]
    reputation: Reputation | None
    bounce_chart: Markup
    complaint_chart: Markup

    @property
    def latest(self) -> Reading | None:
        """The last poll that knew a rate."""
        known = [r for r in (self.reputation.history if self.reputation else []) if r.bounce_rate is not None]
        return known[-1] if known else None

    @property
    def sending(self) -> QueuedCampaign | None:
        """The campaign going out now."""
        return self.queue[0] if self.queue and self.queue[0].status == "sending" else None

    @property
    def waiting(self) -> list[QueuedCampaign]:
        """The campaigns behind it, in the order they go."""
        return self.queue[1:] if self.sending else self.queue

    @property
    def paused_until(self) -> datetime | None:
        """Until when the account is paused (the brake's or the senders' word), if it is."""
        if self.reputation and self.reputation.pause:
            return self.reputation.pause.until
        return self.account.paused_until if self.account.paused else None

    @property
    def quota_percent(self) -> float | None:
        """Share of the 24-hour quota used (None: no quota)."""
        if not self.account.daily_quota:
            return None
        return min(100.0, 100 * self.sent_24h / self.account.daily_quota)


_SOURCES = {"counters": "contagem própria", "cloudwatch": "CloudWatch"}
_BRAKE = re.compile(r"^reputation brake \((?P<source>\w+)\): (?P<found>.+)$")
_BREACH = re.compile(r"(?P<kind>bounce|complaint) rate (?P<rate>[\d.]+)% >= (?P<limit>[\d.]+)%")


def pause_reason(reason: str) -> str:
    """A pause's reason in Portuguese when it is one of the brake's or the sender's own phrases
    (bounce and sender word them in English for the logs); anything else as it came."""
    if reason.startswith("provider refused: "):
        return "o provedor recusou o envio: " + reason.removeprefix("provider refused: ")
    match = _BRAKE.match(reason)
    if not match:
        return reason
    found = [
        f"taxa de {'bounce' if b['kind'] == 'bounce' else 'denúncias'} {b['rate'].replace('.', ',')}%"
        f" ≥ limite de {b['limit'].replace('.', ',')}%"
        for b in _BREACH.finditer(match["found"])
    ]
    source = _SOURCES.get(match["source"], match["source"])
    return f"freio de reputação ({source}): {'; '.join(found) or match['found']}"


def _fmt_percent(value: float, digits: int) -> str:
    return f"{value * 100:.{digits}f}%".replace(".", ",")


def rate_chart(
    readings: list[Reading],
    field: str,
    threshold: float,
    since: datetime,
    until: datetime,
    *,
    label: str,
    digits: int = 1,
    width: int = 560,
    height: int = 150,
) -> Markup:
    """An SVG line chart of one rate (`bounce_rate` or `complaint_rate`) from `since` to `until`,
    with the threshold as a dashed line, paused polls shaded, and unknown rates as gaps."""
    left, right, top, bottom = 52, 8, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    values: list[float] = [getattr(r, field) for r in readings if getattr(r, field) is not None]
    y_max: float = max([threshold * 1.5, *(v * 1.1 for v in values)])
    span = (until - since).total_seconds() or 1.0

    def x(at: datetime) -> float:
        return left + plot_w * min(max((at - since).total_seconds() / span, 0.0), 1.0)

    def y(value: float) -> float:
        return top + plot_h * (1 - min(value / y_max, 1.0))

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafbfc" stroke="#e4e7eb"/>',
    ]
    # Paused stretches: from a paused poll to the next poll.
    for index, current in enumerate(readings):
        if current.paused:
            end = readings[index + 1].polled_at if index + 1 < len(readings) else until
            parts.append(
                f'<rect x="{x(current.polled_at):.1f}" y="{top}" width="{max(x(end) - x(current.polled_at), 1):.1f}" '
                f'height="{plot_h}" fill="#fffbea"/>'
            )
    threshold_y = y(threshold)
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{threshold_y:.1f}" y2="{threshold_y:.1f}" '
        'stroke="#c53030" stroke-dasharray="5 4" stroke-width="1.2"/>'
        f'<text x="{left + plot_w - 4}" y="{threshold_y - 4:.1f}" text-anchor="end" font-size="11" fill="#c53030">'
        f"limite {_fmt_percent(threshold, digits)}</text>"
    )
    # Lines, broken where a rate is unknown.
    segments: list[list[str]] = [[]]
    for reading in readings:
        value = getattr(reading, field)
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append(f"{x(reading.polled_at):.1f},{y(value):.1f}")
    for points in segments:
        if len(points) > 1:
            parts.append(
                f'<polyline points="{" ".join(points)}" fill="none" stroke="#ec7000" stroke-width="2"/>'
            )
        elif points:
            cx, cy = points[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="#ec7000"/>')
    for value in (0.0, y_max / 2, y_max):
        parts.append(
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11" fill="#616e7c">'
            f"{_fmt_percent(value, digits)}</text>"
        )
    for fraction, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        at = (since + (until - since) * fraction).astimezone(SAO_PAULO)
        parts.append(
            f'<text x="{left + plot_w * fraction:.1f}" y="{height - 6}" text-anchor="{anchor}" font-size="11" '
            f'fill="#616e7c">{at:%d/%m %H:%M}</text>'
        )
    if not values:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" text-anchor="middle" font-size="12" '
            'fill="#616e7c">sem leituras no período</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


async def _reputations(
    runtime: RuntimeDep, account_ids: list[int], hours: int
) -> tuple[dict[int, Reputation | None], bool]:
    """Each account's reputation from bounce (in parallel); whether bounce answered."""
    client = bounce_of(runtime)
    try:
        found = await asyncio.gather(*(client.reputation(a, hours) for a in account_ids))
    except BounceUnavailable:
        return {}, False
    return dict(zip(account_ids, found, strict=True)), True


@router.get("/uso-das-contas", response_class=HTMLResponse)
async def usage(
    request: Request,
    runtime: RuntimeDep,
    user: UserDep,
    horas: Annotated[int, Query(ge=1, le=720)] = 24,
) -> HTMLResponse:
    """Every account's usage (a normal user's: those of their sender addresses)."""
    hours = horas if horas in PERIODS else 24
    now = datetime.now(UTC)
    async with runtime.pool.acquire() as conn:
        accounts = await campaign_repo.AccountRepository(conn).list()
        if not user.is_admin:
            senders = await campaign_repo.SenderAddressRepository(conn).list()
            mine = {s.account_id for s in senders if s.sender_address_id in user.sender_address_ids}
            accounts = [a for a in accounts if a.account_id in mine]
        usage_repo = UsageRepository(conn)
        sent = await usage_repo.sent_since(now - timedelta(hours=24))
        queues = await usage_repo.queues()
    reputations, bounce_ok = await _reputations(runtime, [a.account_id for a in accounts], hours)
    since = now - timedelta(hours=hours)
    cards = []
    for account in accounts:
        reputation = reputations.get(account.account_id)
        history = reputation.history if reputation else []
        cards.append(
            AccountUsage(
                account=account,
                sent_24h=sent.get(account.account_id, 0),
                queue=queues.get(account.account_id, []),
                reputation=reputation,
                bounce_chart=rate_chart(
                    history,
                    "bounce_rate",
                    account.bounce_threshold,
                    since,
                    now,
                    label=f"Taxa de bounce de {account.name}",
                    digits=1,
                ),
                complaint_chart=rate_chart(
                    history,
                    "complaint_rate",
                    account.complaint_threshold,
                    since,
                    now,
                    label=f"Taxa de denúncias de {account.name}",
                    digits=2,
                ),
            )
        )
    return render(
        request,
        "usage/list.html",
        {
            "cards": cards,
            "bounce_ok": bounce_ok,
            "hours": hours,
            "periods": PERIODS,
            "percent": _fmt_percent,
            "pause_reason": pause_reason,
            "done": request.query_params.get("feito"),
        },
    )


async def _account(runtime: RuntimeDep, account_id: int) -> Account:
    async with runtime.pool.acquire() as conn:
        return await campaign_repo.AccountRepository(conn).get(account_id)


def _override_page(request: Request, account: Account, form: Form, status_code: int = 200) -> HTMLResponse:
    return render(
        request,
        "usage/override.html",
        {"account": account, "form": form, "choices": OVERRIDE_HOURS},
        status_code=status_code,
    )


@router.get("/uso-das-contas/{account_id}/ignorar-freio", response_class=HTMLResponse)
async def override_form(
    account_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> HTMLResponse:
    """The confirmation of a brake override, with the risk spelled out."""
    account = await _account(runtime, account_id)
    return _override_page(request, account, Form({"hours": "24"}))


@router.post("/uso-das-contas/{account_id}/ignorar-freio", response_model=None)
async def override(account_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep) -> Response:
    """Ignore the account's bounce brake for a while (audited, and logged by bounce)."""
    account = await _account(runtime, account_id)
    form = await Form.read(request)
    reason = form.text("reason", required="Explique por que o freio será ignorado.", max_length=1000)
    hours_text = form.text("hours")
    if not hours_text.isdigit() or int(hours_text) not in OVERRIDE_HOURS:
        form.errors["hours"] = "Escolha por quanto tempo."
    if not form.checked("confirm"):
        form.errors["confirm"] = "Confirme que entende o risco."
    if not form.ok:
        return _override_page(request, account, form, status_code=422)
    hours = int(hours_text)
    until = datetime.now(UTC) + timedelta(hours=hours) if hours else None
    try:
        done = await bounce_of(runtime).set_override(account_id, by=admin.email, until=until, reason=reason)
    except BounceUnavailable:
        form.errors["confirm"] = "O serviço de bounce não respondeu; nada foi mudado. Tente de novo."
        return _override_page(request, account, form, status_code=503)
    except OverrideRefused as exc:
        form.errors["hours"] = f"O serviço de bounce recusou: {exc}"
        return _override_page(request, account, form, status_code=422)
    if done is None:
        form.errors["confirm"] = (
            "O serviço de bounce ainda não conhece esta conta (a configuração dela não chegou); tente em instantes."
        )
        return _override_page(request, account, form, status_code=409)
    async with runtime.transaction() as conn:
        await audit(
            conn,
            admin,
            "brake.overridden",
            f"account:{account_id}",
            until=until.isoformat() if until else None,
            reason=reason,
        )
    return RedirectResponse(f"{_BASE}?feito=freio-ignorado", status_code=303)


@router.post("/uso-das-contas/{account_id}/religar-freio", response_model=None)
async def clear_override(
    account_id: IdPath, request: Request, runtime: RuntimeDep, admin: AdminDep
) -> Response:
    """Let the brake judge the account again (audited)."""
    await _account(runtime, account_id)
    try:
        cleared = await bounce_of(runtime).clear_override(account_id, by=admin.email)
    except BounceUnavailable:
        return render(
            request,
            "error.html",
            {
                "title": "Serviço indisponível",
                "message": "O serviço de bounce não respondeu; nada foi mudado.",
            },
            status_code=503,
        )
    if not cleared:
        raise NotFound(f"account {account_id} has no override")
    async with runtime.transaction() as conn:
        await audit(conn, admin, "brake.override_cleared", f"account:{account_id}")
    return RedirectResponse(f"{_BASE}?feito=freio-religado", status_code=303)
