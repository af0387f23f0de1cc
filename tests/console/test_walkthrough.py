"""The console as people use it, in a real browser (Playwright on Debian's chromium) against the
whole platform running as real processes (five services, PostgreSQL, RabbitMQ, an SMTP sink).

An administrator and a normal user each create a campaign in the console, start it, watch its
status change by itself until it is completed, and open its result; the administrator also sends
a test to their own address and exports the result. The normal user sees only the campaigns of
their sender address and is refused the administration screens and APIs.

Screenshots go to tests/console/screenshots/ (not committed) to be looked at.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from devtools.smtp_sink import SmtpSink
from devtools.stack import Stack
from tests.console.browser_support import CHROMIUM, SCREENSHOTS, chromium, console_stack
from tests.support import until

pytestmark = pytest.mark.connected

# Names of this run's own: the run's database is shared with other tests that make people too.
TAG = uuid.uuid4().hex[:6]
ADMIN = ("Ana Administradora", f"ana.{TAG}@mailer.example")
NORMAL = ("Nuno Comunicação", f"nuno.{TAG}@mailer.example")
RECIPIENTS = [
    {"email": "maria@exemplo.org", "name": "Maria Silva", "fields": {"cidade": "Recife"}},
    {"email": "joao@exemplo.org", "name": "João Souza", "fields": {"cidade": "Belém"}},
    {"email": "lucia@exemplo.net", "name": "Lúcia Lima", "fields": {"cidade": "Natal"}},
]

pytest.importorskip("playwright")
if shutil.which(CHROMIUM) is None:  # pragma: no cover - the project's machines have it
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


@pytest.fixture
def stack(database_url: str, own_vhost: str, tmp_path: Path) -> Iterator[Stack]:
    """The platform as separate processes, with the console's first administrator configured."""
    with console_stack(database_url, own_vhost, tmp_path, ADMIN[1], 120) as services:
        yield services


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def shot(page: Page, name: str) -> None:
    """A full-page screenshot to look at."""
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def total(page: Page, label: str) -> Locator:
    """The value of one of the result's totals."""
    return page.locator(".total").filter(has=page.get_by_text(label, exact=True)).locator(".value")


def sign_in(page: Page, base: str, name: str, email: str) -> None:
    """The development login, as typed."""
    page.goto(f"{base}/console/campanhas")
    expect(page).to_have_url(f"{base}/console/entrar?next=/console/campanhas")
    page.get_by_label("Nome").fill(name)
    page.get_by_label("E-mail").fill(email)
    page.get_by_role("button", name="Entrar").click()
    expect(page.get_by_role("heading", name="Campanhas")).to_be_visible()


def create_campaign(page: Page, name: str, sender: str, group: str) -> int:
    """Fill the new campaign form (with its preview) and save it; returns its id."""
    page.get_by_role("link", name="+ Nova campanha").click()
    expect(page.get_by_role("heading", name="Nova campanha")).to_be_visible()
    page.get_by_label("Nome da campanha").fill(name)
    page.get_by_label("Remetente").select_option(label=sender)
    page.get_by_label(group).check()
    page.get_by_label("Assunto").fill("Novidades para você, {{ nome }}")
    body = page.get_by_label("Corpo da mensagem (HTML)")
    body.fill(
        "<h2>Olá, {{ nome }}!</h2>\n<p>Temos novidades para quem mora em {{ cidade }}.</p>\n"
        '<p><a href="https://www.exemplo.org/novidades">Veja as novidades</a></p>\n'
        '<p style="font-size:12px;color:#777"><a href="{{ link_descadastro }}">Cancelar inscrição</a></p>'
    )
    preview = page.frame_locator("#preview iframe")
    expect(preview.get_by_role("heading")).to_contain_text("Olá,")
    return _save(page, name)


def _save(page: Page, name: str) -> int:
    page.get_by_role("button", name="Salvar").click()
    expect(page.get_by_role("status")).to_contain_text("criada")
    row = page.locator("tr", has_text=name)
    return int(row.locator("td").first.inner_text())


def start_and_watch(page: Page, campaign_id: int) -> None:
    """Iniciar (confirming), then wait for the live status to reach Concluída."""
    row = page.locator(f"#campaign-{campaign_id}")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Iniciar").click()
    expect(page.get_by_role("status")).to_contain_text(f"Campanha {campaign_id} iniciada.")
    status = page.locator(f"#campaign-{campaign_id} .status")
    expect(status).to_have_text("Concluída", timeout=60_000)


def _setup(stack: Stack, sink: SmtpSink) -> dict[str, Any]:
    """What an administrator sets up outside these screens: two sending accounts into the sink,
    and a sender address on each (the group is made in the console)."""
    api = stack.campaign_api()
    senders = {}
    for label in ("Itaú Social", "Escrevendo o Futuro"):
        account = api.post(
            "/accounts",
            json={
                "name": f"{label} {uuid.uuid4().hex[:4]}",
                "transport": "smtp",
                "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none"},
            },
        )
        assert account.status_code == 201, account.text
        sender = api.post(
            "/sender-addresses",
            json={
                "account_id": account.json()["account_id"],
                "name": label,
                "email": f"{label.split()[0].lower().replace('ú', 'u')}.{TAG}@mailer.example",
            },
        )
        assert sender.status_code == 201, sender.text
        senders[label] = sender.json()
    return {"senders": senders}


def create_group(page: Page, base: str, name: str) -> None:
    """Grupos → Novo grupo: a CSV file whose extra column (cidade) becomes a personalisation field."""
    page.goto(f"{base}/console/grupos/novo")
    page.locator("#name").fill(name)
    page.locator('input[name="kind"][value="csv"]').check()
    lines = ["email;nome;cidade", *(f"{r['email']};{r['name']};{r['fields']['cidade']}" for r in RECIPIENTS)]
    page.locator('input[type="file"][name="file"]').set_input_files(
        files=[{"name": "educadores.csv", "mimeType": "text/csv", "buffer": "\n".join(lines).encode()}]
    )
    page.get_by_role("button", name="Criar grupo").click()
    expect(page).to_have_url(re.compile(r"/console/grupos/\d+"))
    expect(page.locator("body")).to_contain_text(name)
    shot(page, "02b-grupo-criado")


def _link(database_url: str, email: str, sender_address_id: int) -> None:
    """What the Usuários screen does: link the user to a sender address."""

    async def link() -> None:
        conn = await asyncpg.connect(database_url, server_settings={"search_path": "campaign"})
        try:
            user_id = await conn.fetchval("SELECT user_id FROM users WHERE email = $1", email)
            await conn.execute(
                "INSERT INTO user_sender_addresses (user_id, sender_address_id) VALUES ($1, $2)",
                user_id,
                sender_address_id,
            )
        finally:
            await conn.close()

    # Playwright's sync API runs an event loop in this thread: the link goes in a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, link()).result()


def test_an_admin_and_a_normal_user_run_campaigns_in_the_console(
    stack: Stack, sink: SmtpSink, browser: Browser, database_url: str
) -> None:
    base = stack.url("campaign")
    world = _setup(stack, sink)
    group = f"Educadores do Nordeste {TAG}"

    # The normal user signs in once so the administrator can link them to a sender address.
    nuno = browser.new_context(viewport={"width": 1280, "height": 900}, locale="pt-BR")
    normal = nuno.new_page()
    sign_in(normal, base, *NORMAL)
    _link(database_url, NORMAL[1], world["senders"]["Escrevendo o Futuro"]["sender_address_id"])

    # --- the administrator ------------------------------------------------------------------
    ana = browser.new_context(viewport={"width": 1280, "height": 900}, locale="pt-BR", accept_downloads=True)
    admin = ana.new_page()
    admin.goto(f"{base}/console/entrar")
    shot(admin, "01-login")
    sign_in(admin, base, *ADMIN)
    expect(admin.locator(".badge-admin")).to_have_text("Administrador")
    nav = admin.get_by_role("navigation", name="Menu principal")
    expect(nav.get_by_role("link", name="Campanhas")).to_be_visible()
    shot(admin, "02-campanhas-admin")
    create_group(admin, base, group)
    admin.goto(f"{base}/console/campanhas")

    name = f"Boletim de novembro {uuid.uuid4().hex[:4]}"
    admin.get_by_role("link", name="+ Nova campanha").click()
    admin.get_by_label("Nome da campanha").fill("")
    admin.get_by_role("button", name="Salvar").click()
    expect(admin.locator("#name-error")).to_have_text("Informe o nome da campanha.")
    shot(admin, "03-nova-campanha-erros")
    admin.goto(f"{base}/console/campanhas")
    campaign_id = create_campaign(admin, name, f"Itaú Social <itau.{TAG}@mailer.example>", group)
    row = admin.locator(f"#campaign-{campaign_id}")
    row.get_by_label(f"Mais operações da campanha {campaign_id}").click()
    shot(admin, "03b-menu-de-operacoes")
    row.get_by_role("link", name="Editar").click()
    admin.get_by_role("button", name=f"Enviar teste para {ADMIN[1]}").click()
    expect(admin.locator("#test-result")).to_contain_text(f"Teste enviado para {ADMIN[1]}")
    shot(admin, "04-editar-campanha-teste")
    until(lambda: any(ADMIN[1] in m.recipients for m in sink.received()), timeout=30)
    test_message = next(m for m in sink.received() if ADMIN[1] in m.recipients)
    assert "Ana Administradora" in test_message.body("html") and "[cidade]" in test_message.body("html")

    admin.goto(f"{base}/console/campanhas")
    start_and_watch(admin, campaign_id)
    shot(admin, "05-campanha-concluida")
    admin.locator(f"#campaign-{campaign_id}").get_by_role("link", name="Resultado").click()
    expect(admin.get_by_role("heading", name=f"Resultado da campanha {campaign_id}")).to_be_visible()
    expect(total(admin, "Enviados")).to_have_text("3")
    expect(admin.locator("table.results tbody tr")).to_have_count(3)
    shot(admin, "06-resultado-admin")
    admin.get_by_role("searchbox", name="Filtrar destinatários").fill("joao")
    expect(admin.locator("table.results tbody tr")).to_have_count(1)
    with admin.expect_download() as download:
        admin.get_by_role("link", name="Exportar").click()
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text("utf-8-sig")), delimiter=";"))
    assert len(rows) == 2 and "joao@exemplo.org" in rows[1]
    personalised = {
        m.recipients[0]: m for m in sink.received() if m.recipients[0] in {r["email"] for r in RECIPIENTS}
    }
    assert "Belém" in personalised["joao@exemplo.org"].body("html")

    # --- the normal user --------------------------------------------------------------------
    normal.goto(f"{base}/console/campanhas")
    expect(normal.locator(f"#campaign-{campaign_id}")).to_have_count(0)
    nav = normal.get_by_role("navigation", name="Menu principal")
    expect(nav.get_by_role("link", name="Usuários")).to_have_count(0)
    normal.get_by_role("link", name="+ Nova campanha").click()
    options = normal.get_by_label("Remetente").locator("option").all_inner_texts()
    assert options == ["Escolha…", f"Escrevendo o Futuro <escrevendo.{TAG}@mailer.example>"]
    normal.goto(f"{base}/console/campanhas")
    own = create_campaign(normal, f"Convite {uuid.uuid4().hex[:4]}", options[1], group)
    shot(normal, "07-campanhas-normal")
    start_and_watch(normal, own)
    normal.locator(f"#campaign-{own}").get_by_role("link", name="Resultado").click()
    expect(total(normal, "Enviados")).to_have_text("3")
    shot(normal, "08-resultado-normal")

    # Administration is refused, on screens and on the APIs behind them.
    response = normal.goto(f"{base}/console/usuarios")
    assert response is not None and response.status in (403, 404)
    if response.status == 403:
        expect(normal.get_by_role("heading", name="Acesso negado")).to_be_visible()
        shot(normal, "09-acesso-negado")
    assert normal.goto(f"{base}/console/campanhas/{campaign_id}/resultado").status == 404  # type: ignore[union-attr]
    assert normal.request.get(f"{base}/api/v1/accounts").status == 403
    assert normal.request.get(f"{base}/api/v1/campaigns/{campaign_id}").status == 404
    assert httpx.get(f"{base}/api/v1/campaigns").status_code == 401  # no session, no token

    # Small screens: the menu folds behind its button.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=nuno.storage_state())
    small = phone.new_page()
    small.goto(f"{base}/console/campanhas")
    expect(small.get_by_role("navigation", name="Menu principal")).to_be_hidden()
    shot(small, "10-celular-lista")
    small.get_by_role("button", name="Menu").click()
    expect(small.get_by_role("navigation", name="Menu principal")).to_be_visible()
    shot(small, "11-celular-menu")

    normal.get_by_role("button", name="Sair").click()
    expect(normal).to_have_url(f"{base}/console/entrar")
