"""The administration screens in a real browser (Playwright on Debian's chromium) against the
platform running as real processes: an administrator creates a sending account and a sender
address, links a user to it, creates groups (typed, CSV with errors, remote with a preview),
uploads an image and sees it through its public URL (served by tracking), removes an address
from the bounce list, reads the unsubscribes, and overrides an account's bounce brake after the
confirmation. A normal user is refused the administration screens.

Screenshots go to tests/console/screenshots/admin-*.png (not committed) to be looked at.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.sync_api import Browser, Page, expect

from devtools.remote_group_server import RemoteGroupServer
from devtools.stack import Stack
from tests.console.browser_support import CHROMIUM, SCREENSHOTS, chromium, console_stack
from tests.support import until

pytestmark = pytest.mark.connected

ADMIN = ("Ana Administradora", "ana.admin@mailer.example")
NORMAL = ("Nuno Comunicação", "nuno@mailer.example")
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
    b"\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82"
)

pytest.importorskip("playwright")
if shutil.which(CHROMIUM) is None:  # pragma: no cover - the project's machines have it
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


@pytest.fixture
def stack(database_url: str, own_vhost: str, tmp_path: Path) -> Iterator[Stack]:
    """The platform as separate processes; remote groups may be read from loopback."""
    with console_stack(
        database_url, own_vhost, tmp_path, ADMIN[1], 180, REMOTE_ALLOWED_NETWORKS='["127.0.0.0/8"]'
    ) as services:
        yield services


@pytest.fixture
def remote_group() -> Iterator[RemoteGroupServer]:
    server = RemoteGroupServer(records=7, page_size=5, token="123456789").start()
    yield server
    server.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def shot(page: Page, name: str) -> None:
    """A full-page screenshot to look at."""
    page.screenshot(path=str(SCREENSHOTS / f"admin-{name}.png"), full_page=True)


def sign_in(page: Page, base: str, name: str, email: str) -> None:
    page.goto(f"{base}/console/entrar")
    page.get_by_label("Nome").fill(name)
    page.get_by_label("E-mail").fill(email)
    page.get_by_role("button", name="Entrar").click()
    expect(page.get_by_role("heading", name="Campanhas")).to_be_visible()


def _sql(database_url: str, *statements: tuple[str, tuple[Any, ...]]) -> list[Any]:
    """Run statements on the run's database (for what other parts of the platform record)."""

    async def run() -> list[Any]:
        conn = await asyncpg.connect(database_url)
        try:
            return [await conn.fetchval(sql, *args) for sql, args in statements]
        finally:
            await conn.close()

    # Playwright's sync API keeps an event loop on this thread: run ours on another.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def _seed_feedback(database_url: str, account_id: int, campaign_id: int, tag: str) -> None:
    """What bounce and tracking would have recorded: suppressed addresses, unsubscribes (their
    domains carry `tag`: the run's database holds other tests' entries too), and the brake's
    readings of the account over the day, ending in a pause."""
    now = datetime.now(UTC)
    statements: list[tuple[str, tuple[Any, ...]]] = [
        (
            "INSERT INTO bounce.suppressions (email, reason, diagnostic, account_id, campaign_id, suppressed_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            (email, reason, diagnostic, account_id, campaign_id, now - timedelta(hours=hours)),
        )
        for email, reason, diagnostic, hours in (
            (f"caixa.cheia@{tag}.exemplo.com.br", "soft_bounce", "452 4.2.2 mailbox full", 5),
            (f"nao.existe@{tag}.exemplo.com.br", "bounce", "550 5.1.1 user unknown", 3),
            (f"reclamou@{tag}.exemplo.org", "complaint", "abuse", 1),
        )
    ]
    for i, (name, email, scope, reason) in enumerate(
        (
            ("Maria Silva", f"maria@{tag}.exemplo.org", "all", "Recebo e-mails demais"),
            ("João Souza", f"joao@{tag}.exemplo.org", "campaign", ""),
            ("Lúcia Lima", f"lucia@{tag}.exemplo.net", "all", "Não tenho mais interesse"),
        ),
        start=1,
    ):
        at = now - timedelta(hours=4 - i)
        statements.append(
            (
                "INSERT INTO campaign.results (campaign_id, recipient_id, email, name, status, sent_at,"
                " unsubscribed_campaign_at, unsubscribed_all_at, unsubscribe_reason)"
                " VALUES ($1, $2, $3, $4, 'sent', $5, $6, $7, $8)",
                (
                    campaign_id,
                    i,
                    email,
                    name,
                    now - timedelta(hours=6),
                    at if scope == "campaign" else None,
                    at if scope == "all" else None,
                    reason,
                ),
            )
        )
    for step in range(48):
        polled = now - timedelta(minutes=30 * (48 - step))
        bounce_rate = None if step in (10, 11) else 0.01 + 0.0013 * step
        statements.append(
            (
                "INSERT INTO bounce.reputation_history (account_id, polled_at, source, bounce_rate,"
                " complaint_rate, sent, paused) VALUES ($1, $2, 'counters', $3, $4, $5, $6)",
                (
                    account_id,
                    polled,
                    bounce_rate,
                    None if bounce_rate is None else 0.0002 + 0.00001 * step,
                    400 + step * 10,
                    bounce_rate is not None and bounce_rate >= 0.05,
                ),
            )
        )
    statements.append(
        (
            "INSERT INTO bounce.reputation_pauses (account_id, paused_at, until, reason) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING",
            (
                account_id,
                now - timedelta(hours=2),
                now + timedelta(hours=22),
                "reputation brake (counters): bounce rate 5.16% >= 5.00%",
            ),
        )
    )
    _sql(database_url, *statements)


def test_administration_screens(
    stack: Stack, browser: Browser, database_url: str, remote_group: RemoteGroupServer, tmp_path: Path
) -> None:
    base = stack.url("campaign")
    tag = uuid.uuid4().hex[:4]

    # A normal user signs in first (so the administrator can link them) and is refused administration.
    nuno = browser.new_context(viewport={"width": 1280, "height": 900}, locale="pt-BR")
    normal = nuno.new_page()
    sign_in(normal, base, *NORMAL)
    for path in ("usuarios", "enderecos-de-envio", "subscricoes-bounce", "subscricoes-canceladas"):
        response = normal.goto(f"{base}/console/{path}")
        assert response is not None and response.status == 403, path
    expect(normal.get_by_role("heading", name="Acesso negado")).to_be_visible()

    ana = browser.new_context(viewport={"width": 1366, "height": 900}, locale="pt-BR")
    admin = ana.new_page()
    sign_in(admin, base, *ADMIN)

    # --- Endereços de envio SMTP: a new account (with a mistake first), then an address -------
    admin.goto(f"{base}/console/enderecos-de-envio")
    admin.get_by_role("link", name="+ Nova conta de envio").click()
    admin.get_by_label("Nome da conta").fill(f"Itaú Social SMTP {tag}")
    admin.get_by_label("Host").fill("email-smtp.sa-east-1.amazonaws.com")
    admin.get_by_label("Usuário").fill("AKIAENVIOS")
    admin.get_by_label("Senha").fill("senha-secreta-smtp")
    admin.get_by_label("Mensagens por segundo").fill("dez")
    admin.get_by_role("button", name="Salvar").click()
    expect(admin.locator("#rate_per_second-error")).to_have_text("Digite um número.")
    expect(admin.get_by_label("Host")).to_have_value("email-smtp.sa-east-1.amazonaws.com")
    assert "senha-secreta-smtp" not in admin.content()
    shot(admin, "01-conta-erros")
    admin.get_by_label("Mensagens por segundo").fill("14")
    admin.get_by_label("Senha").fill("senha-secreta-smtp")
    admin.get_by_label("Cota em 24 horas (opcional)").fill("50000")
    admin.get_by_role("button", name="Salvar").click()
    expect(admin.get_by_role("status")).to_have_text("Conta de envio criada.")
    admin.get_by_role("link", name="+ Novo endereço").click()
    admin.get_by_label("Conta de envio").select_option(label=f"Itaú Social SMTP {tag}")
    admin.get_by_label("Nome do remetente").fill("Itaú Social")
    admin.get_by_label("E-mail do remetente").fill(f"comunicacao-{tag}@itausocial.org.br")
    admin.get_by_role("button", name="Salvar").click()
    expect(admin.get_by_role("status")).to_have_text("Endereço de envio criado.")
    shot(admin, "02-enderecos-de-envio")
    account_id, sender_id = _sql(
        database_url,
        ("SELECT account_id FROM campaign.accounts WHERE name = $1", (f"Itaú Social SMTP {tag}",)),
        (
            "SELECT sender_address_id FROM campaign.sender_addresses WHERE email = $1",
            (f"comunicacao-{tag}@itausocial.org.br",),
        ),
    )
    admin.goto(f"{base}/console/enderecos-de-envio/contas/{account_id}/editar")
    expect(admin.get_by_label("Senha")).to_have_value("")
    shot(admin, "03-conta-editar")

    # --- Usuários: link the normal user to the new address --------------------------------------
    admin.goto(f"{base}/console/usuarios")
    admin.locator("tr", has_text=NORMAL[1]).get_by_role("link", name="Editar").click()
    admin.get_by_label(f"Itaú Social <comunicacao-{tag}@itausocial.org.br>").check()
    shot(admin, "04-usuario-editar")
    admin.get_by_role("button", name="Salvar").click()
    expect(admin.get_by_role("status")).to_have_text("Usuário atualizado.")
    expect(admin.locator("tr", has_text=NORMAL[1])).to_contain_text(f"comunicacao-{tag}@itausocial.org.br")
    shot(admin, "05-usuarios")

    # --- Grupos: typed, CSV with a bad line, remote with a preview ------------------------------
    admin.goto(f"{base}/console/grupos/novo")
    admin.get_by_label("Nome do grupo").fill(f"Equipe {tag}")
    admin.get_by_label("E-mails digitados").fill(
        "ana@exemplo.org\nsem-arroba\nBruno Lima <bruno@exemplo.org>"
    )
    admin.get_by_role("button", name="Criar grupo").click()
    expect(admin.locator("#members-error")).to_contain_text("Linha 2: e-mail inválido (sem-arroba).")
    shot(admin, "06-grupo-erros")
    admin.get_by_label("E-mails digitados").fill("ana@exemplo.org\nBruno Lima <bruno@exemplo.org>")
    admin.get_by_role("button", name="Criar grupo").click()
    expect(admin.get_by_role("status")).to_have_text("Grupo criado.")
    csv_file = tmp_path / "educadores.csv"
    csv_file.write_text(
        "email;nome;cidade\nmaria@exemplo.org;Maria Silva;Recife\njoao@@exemplo;João;Belém\n"
        "lucia@exemplo.net;Lúcia Lima;Natal\n",
        encoding="utf-8",
    )
    admin.goto(f"{base}/console/grupos/novo")
    admin.get_by_label("Nome do grupo").fill(f"Educadores {tag}")
    admin.get_by_label("Arquivo CSV", exact=True).check()
    admin.locator("#file").set_input_files(str(csv_file))
    admin.get_by_role("button", name="Criar grupo").click()
    expect(admin.get_by_role("status")).to_have_text("Grupo criado.")
    expect(admin.get_by_role("link", name="Baixar relatório de erros (CSV)")).to_be_visible()
    shot(admin, "07-grupo-csv")
    admin.goto(f"{base}/console/grupos/novo")
    admin.get_by_label("Nome do grupo").fill(f"Polo {tag}")
    admin.get_by_label("URL remota", exact=True).check()
    admin.get_by_label("URL do grupo").fill(remote_group.url())
    admin.get_by_role("button", name="Criar grupo").click()
    expect(admin.get_by_role("heading", name="Prévia dos primeiros registros")).to_be_visible()
    assert "123456789" not in admin.content()
    shot(admin, "08-grupo-remoto")
    admin.goto(f"{base}/console/grupos")
    shot(admin, "09-grupos")

    # --- Gerenciador de arquivos: the image comes back through its public URL -------------------
    image = tmp_path / "Logo Itaú Social.png"
    image.write_bytes(PNG)
    admin.goto(f"{base}/console/arquivos")
    admin.locator("#file").set_input_files(str(image))
    admin.get_by_role("button", name="Enviar", exact=True).click()
    expect(admin.get_by_role("status")).to_contain_text("Arquivo enviado")
    public = admin.locator("input[aria-label^='URL pública']").first.input_value()
    assert public == f"{stack.url('tracking')}/files/Logo-Itau-Social.png"
    fetched = admin.request.get(public)
    assert fetched.status == 200 and fetched.body() == PNG
    admin.goto(f"{base}/console/arquivos")
    shot(admin, "10-arquivos")

    # --- what bounce and tracking recorded meanwhile ---------------------------------------------
    campaign_id = _sql(
        database_url,
        (
            "INSERT INTO campaign.campaigns (name, sender_address_id, subject, html, status, priority, recipients,"
            " started_at) VALUES ('Boletim de novembro', $1, 'Novidades', '<p>oi</p>', 'sending', 5, 5377, now())"
            " RETURNING campaign_id",
            (sender_id,),
        ),
    )[0]
    _sql(
        database_url,
        (
            "INSERT INTO campaign.campaigns (name, sender_address_id, subject, html, status, priority)"
            " VALUES ('Convite regional', $1, 'Convite', '<p>oi</p>', 'queued', 7)",
            (sender_id,),
        ),
    )
    until(
        lambda: _sql(
            database_url,
            ("SELECT count(*) FROM bounce.reputation_accounts WHERE account_id = $1", (account_id,)),
        )[0],
        timeout=30,
    )
    _seed_feedback(database_url, account_id, campaign_id, tag)

    # --- Subscrições bounce: removal after its confirmation -------------------------------------
    admin.goto(f"{base}/console/subscricoes-bounce")
    expect(admin.locator("tbody tr", has_text=tag)).to_have_count(3)
    shot(admin, "11-subscricoes-bounce")
    admin.locator("tr", has_text=f"caixa.cheia@{tag}").get_by_role("link", name="Remover da lista").click()
    shot(admin, "12-subscricoes-bounce-remover")
    admin.get_by_role("button", name="Remover da lista").click()
    expect(admin.get_by_role("status")).to_contain_text("Endereço removido da lista")
    expect(admin.locator("tbody tr", has_text=tag)).to_have_count(2)

    # --- Subscrições canceladas ---------------------------------------------------------------------
    admin.goto(f"{base}/console/subscricoes-canceladas")
    expect(admin.locator("tbody tr", has_text=tag)).to_have_count(3)
    shot(admin, "13-subscricoes-canceladas")
    admin.get_by_role("searchbox", name="Filtrar subscrições canceladas").fill("interesse")
    admin.get_by_role("button", name="Filtrar").click()
    expect(admin.locator("tbody tr", has_text=tag)).to_have_count(1)

    # --- Exibir uso das contas, and the brake override ----------------------------------------------
    admin.goto(f"{base}/console/uso-das-contas")
    card = admin.locator(f"#conta-{account_id}")
    expect(card).to_contain_text("Pausada até")
    expect(card).to_contain_text("Boletim de novembro")
    expect(card.locator("svg polyline").first).to_be_visible()
    shot(admin, "14-uso-das-contas")
    card.get_by_role("link", name="Ignorar o freio de bounce…").click()
    admin.get_by_label("Motivo").fill("Bounces vieram de outro sistema na mesma conta")
    admin.get_by_role("button", name="Ignorar o freio").click()
    expect(admin.get_by_text("Confirme que entende o risco.")).to_be_visible()
    shot(admin, "15-ignorar-freio")
    admin.get_by_label("Entendo o risco").check()
    admin.get_by_role("button", name="Ignorar o freio").click()
    expect(admin.get_by_role("status")).to_contain_text("está sendo ignorado")
    expect(admin.locator(f"#conta-{account_id}")).to_contain_text(f"Freio ignorado por {ADMIN[1]}")
    shot(admin, "16-uso-freio-ignorado")

    # The normal user sees the usage of their own account, without the override.
    normal.goto(f"{base}/console/uso-das-contas")
    expect(normal.locator(f"#conta-{account_id}")).to_be_visible()
    expect(normal.get_by_role("link", name="Ignorar o freio de bounce…")).to_have_count(0)

    # Small screens.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=ana.storage_state())
    small = phone.new_page()
    small.goto(f"{base}/console/uso-das-contas")
    shot(small, "17-celular-uso")
