"""Remote groups against the local contract server: honest pages, every misbehaviour, retries, the token."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Iterator
from dataclasses import replace

import pytest

from devtools.remote_group_server import RemoteGroupServer
from services.audience.remote import (
    RemoteGroupError,
    RemoteMember,
    RemoteOptions,
    fetch_remote_group,
    redact_url,
    validate_remote_url,
)
from services.audience.safe_http import DestinationPolicy
from services.audience.settings import AudienceSettings

TOKEN = "s3gr3d0-do-grupo"
# The server listens on loopback, which only an explicit allow-list may reach.
LOCAL = DestinationPolicy.of(["127.0.0.1/32"])


@pytest.fixture(scope="module")
def server() -> Iterator[RemoteGroupServer]:
    """The contract server, requiring the token, 25 records in pages of 10 unless a URL says otherwise."""
    group = RemoteGroupServer(records=25, page_size=10, token=TOKEN).start()
    yield group
    group.stop()


# The local server allowed, short waits so retries keep tests fast.
OPTIONS = RemoteOptions(policy=LOCAL, retry_backoff=0.01, retry_max_delay=0.5)


async def fetch(url: str, opts: RemoteOptions = OPTIONS) -> list[list[RemoteMember]]:
    return [page async for page in fetch_remote_group(url, opts)]


class TestFetchRemoteGroup:
    async def test_reads_every_page_in_order(self, server: RemoteGroupServer) -> None:
        pages = await fetch(server.url(), replace(OPTIONS, pages_in_flight=2))

        assert [len(p) for p in pages] == [10, 10, 5]
        members = [m for p in pages for m in p]
        assert members[0] == RemoteMember("Pessoa 1", "pessoa1@example.com")
        assert [m.email for m in members] == [f"pessoa{i}@example.com" for i in range(1, 26)]


def _extra(fault: str) -> dict[str, str]:
    """`fail&status=404` -> {"status": "404"}: a fault's own parameters in the parametrize id."""
    return dict(pair.split("=") for pair in fault.split("&")[1:])


class TestInconsistentAnswers:
    @pytest.mark.parametrize(
        ("fault", "page", "reason"),
        [
            ("wrong_page", 2, "o campo 'pagina' veio 3, mas foi pedida a página 2"),
            ("repeat", 2, "conteúdo repetido da página 1"),
            ("short", 2, "página incompleta: 9 registros, esperados 10"),
            ("empty", 2, "página vazia antes de completar os 25 registros anunciados"),
            ("total", 3, "'totalRegistros' mudou de 25 para 26 durante a leitura"),
            ("broken_json", 1, "a resposta não é um JSON válido"),
            ("content_type", 2, "tipo de conteúdo 'text/html', esperado application/json"),
            ("bad_record", 2, "o registro 1 não tem 'nome' e 'email' como texto"),
            ("fail&status=404", 1, "o servidor respondeu HTTP 404"),
        ],
    )
    async def test_is_an_error_naming_the_page(
        self, server: RemoteGroupServer, fault: str, page: int, reason: str
    ) -> None:
        with pytest.raises(RemoteGroupError) as caught:
            await fetch(server.url(fault_page=page, fault=fault.split("&")[0], **_extra(fault)))

        assert (caught.value.page, caught.value.reason) == (page, reason)
        assert str(caught.value) == f"página {page}: {reason}"

    async def test_a_body_past_the_limit_stops_being_read(self, server: RemoteGroupServer) -> None:
        # The server streams without end: only a reader that stops at the limit returns at all.
        with pytest.raises(RemoteGroupError) as caught:
            await fetch(server.url(fault="oversized"), replace(OPTIONS, max_page_bytes=100_000))

        assert (caught.value.page, caught.value.reason) == (2, "a resposta passa do limite de 100000 bytes")

    async def test_a_declared_length_past_the_limit_is_refused_unread(
        self, server: RemoteGroupServer
    ) -> None:
        with pytest.raises(RemoteGroupError) as caught:
            await fetch(server.url(), replace(OPTIONS, max_page_bytes=300))

        assert (caught.value.page, caught.value.reason) == (1, "a resposta passa do limite de 300 bytes")

    async def test_a_4xx_is_not_retried(self, server: RemoteGroupServer) -> None:
        url = server.url(fault="fail", status=400, fault_page=2, run="4xx")
        with pytest.raises(RemoteGroupError, match="HTTP 400"):
            await fetch(url)

        assert server.attempts["4xx", 2] == 1

    async def test_without_the_token_the_server_refuses(self, server: RemoteGroupServer) -> None:
        with pytest.raises(RemoteGroupError) as caught:
            await fetch(f"http://127.0.0.1:{server.port}/grupo")

        assert (caught.value.page, caught.value.reason) == (1, "o servidor respondeu HTTP 403")


class TestRetries:
    @pytest.mark.parametrize("fault", ["fail&status=500", "fail&status=503", "drop", "slow&delay=1"])
    async def test_transient_failures_are_retried_until_the_page_comes(
        self, server: RemoteGroupServer, fault: str
    ) -> None:
        run = f"transient-{fault}"
        url = server.url(fault=fault.split("&")[0], failures=2, run=run, **_extra(fault))

        pages = await fetch(url, replace(OPTIONS, read_timeout=0.2))

        assert sum(map(len, pages)) == 25
        assert server.attempts[run, 2] == 3

    async def test_gives_up_after_the_last_retry(self, server: RemoteGroupServer) -> None:
        with pytest.raises(RemoteGroupError) as caught:
            await fetch(server.url(fault="fail", status=502, run="gives-up"), replace(OPTIONS, max_retries=2))

        assert caught.value.reason == "o servidor respondeu HTTP 502 (após 3 tentativas)"
        assert server.attempts["gives-up", 2] == 3

    async def test_a_timeout_on_every_try_is_an_error(self, server: RemoteGroupServer) -> None:
        url = server.url(fault="slow", delay=1, fault_page=1)
        with pytest.raises(RemoteGroupError) as caught:
            await fetch(url, replace(OPTIONS, read_timeout=0.1, max_retries=1))

        assert (caught.value.page, caught.value.reason) == (
            1,
            "tempo esgotado esperando o servidor (após 2 tentativas)",
        )

    async def test_waits_what_retry_after_says(self, server: RemoteGroupServer) -> None:
        url = server.url(fault="fail", status=429, retry_after=1, failures=1, run="retry-after")
        started = time.monotonic()

        pages = await fetch(url, replace(OPTIONS, retry_max_delay=5))

        assert sum(map(len, pages)) == 25
        # Only a lower bound: the backoff alone (0.01 s) would have come back far sooner.
        assert time.monotonic() - started >= 0.9

    @pytest.mark.parametrize("retry_after_format", ["seconds", "date"])
    async def test_retry_after_is_capped(self, server: RemoteGroupServer, retry_after_format: str) -> None:
        run = f"capped-{retry_after_format}"
        url = server.url(
            fault="fail",
            status=503,
            retry_after=3600,
            retry_after_format=retry_after_format,
            failures=1,
            run=run,
        )

        # An uncapped wait of an hour would hit the test timeout long before this returns.
        pages = await fetch(url, replace(OPTIONS, retry_max_delay=0.2))

        assert sum(map(len, pages)) == 25
        assert server.attempts[run, 2] == 2


class TestLimits:
    async def test_a_group_over_the_cap_is_refused_on_page_one(self, server: RemoteGroupServer) -> None:
        with pytest.raises(RemoteGroupError) as caught:
            await fetch(server.url(), replace(OPTIONS, max_records=24))

        assert (caught.value.page, caught.value.reason) == (
            1,
            "o grupo anuncia 25 registros, acima do limite de 24",
        )

    async def test_an_empty_group_yields_nothing(self, server: RemoteGroupServer) -> None:
        assert await fetch(server.url(records=0)) == []

    async def test_fetches_at_most_pages_in_flight_ahead(self, server: RemoteGroupServer) -> None:
        before = server.served
        pages = fetch_remote_group(server.url(records=100), replace(OPTIONS, pages_in_flight=3))
        await anext(pages)
        await asyncio.sleep(0.3)  # time enough to fetch everything, were nothing bounding it
        fetched = server.served - before
        await pages.aclose()

        assert fetched == 1 + 3


class TestTokenSecrecy:
    async def test_the_token_is_in_no_log_record_nor_error(
        self, server: RemoteGroupServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        url = server.url(fault="drop", run="secret")

        with pytest.raises(RemoteGroupError) as caught:
            await fetch(url, replace(OPTIONS, max_retries=1))

        logged = [r.getMessage() for r in caplog.records]
        assert any("token=***" in message for message in logged), logged
        assert not [m for m in logged if TOKEN in m]
        assert TOKEN not in str(caught.value)
        # A logged traceback shows the chain of causes too.
        assert TOKEN not in "".join(traceback.format_exception(caught.value))


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            (
                "https://www.meusite.com.br/grupo-envio?token=123456789",
                "https://www.meusite.com.br/grupo-envio?token=***",
            ),
            ("https://u:senha@h.com/g?a=1&segredo&pagina=2#x", "https://***@h.com/g?a=***&***&pagina=2"),
            ("https://h.com/g", "https://h.com/g"),
        ],
    )
    def test_redact_url_hides_query_values_and_user_info(self, url: str, shown: str) -> None:
        assert redact_url(url) == shown

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("ftp://grupos.example.com/lista", "só são aceitas URLs http ou https"),
            (
                "https://grupos.example.com/lista?token=1&pagina=1",
                "a URL não deve conter o parâmetro 'pagina'",
            ),
            ("http://169.254.169.254/latest/meta-data", "o endereço 169.254.169.254 é interno ou reservado"),
        ],
    )
    def test_validate_remote_url_refuses_up_front(self, url: str, reason: str) -> None:
        with pytest.raises(RemoteGroupError) as caught:
            validate_remote_url(url, OPTIONS)

        assert caught.value.page is None
        assert caught.value.reason.startswith(reason)

    async def test_pagina_is_appended_whether_or_not_the_url_has_a_query(
        self, server: RemoteGroupServer
    ) -> None:
        open_server = RemoteGroupServer(records=3, page_size=2).start()
        try:
            url = open_server.url()
            pages = await fetch(url)
        finally:
            open_server.stop()

        assert "?" not in url
        assert [len(p) for p in pages] == [2, 1]
        assert "?token=" in server.url() and sum(map(len, await fetch(server.url()))) == 25


class TestOptions:
    def test_from_settings_takes_every_remote_setting(self) -> None:
        settings = AudienceSettings(
            REMOTE_PAGES_IN_FLIGHT=7,
            REMOTE_CONNECT_TIMEOUT=1.5,
            REMOTE_READ_TIMEOUT=2.5,
            REMOTE_MAX_RETRIES=9,
            REMOTE_RETRY_BACKOFF=0.25,
            REMOTE_RETRY_MAX_DELAY=12,
            REMOTE_MAX_RECORDS=1234,
            REMOTE_MAX_PAGE_BYTES=4096,
            REMOTE_MAX_REDIRECTS=1,
            REMOTE_ALLOWED_NETWORKS=["10.1.0.0/16"],
            REMOTE_ALLOWED_HOSTS=["Grupos.Intranet"],
        )

        opts = RemoteOptions.from_settings(settings)

        assert (opts.pages_in_flight, opts.connect_timeout, opts.read_timeout, opts.max_retries) == (
            7,
            1.5,
            2.5,
            9,
        )
        assert (opts.retry_backoff, opts.retry_max_delay, opts.max_records) == (0.25, 12, 1234)
        assert (opts.max_page_bytes, opts.max_redirects) == (4096, 1)
        assert opts.policy == DestinationPolicy.of(["10.1.0.0/16"], ["grupos.intranet"])

    def test_defaults_allow_nothing_private(self) -> None:
        opts = RemoteOptions.from_settings(AudienceSettings())

        assert opts.policy == DestinationPolicy()
        assert (opts.pages_in_flight, opts.max_records) == (4, 2_000_000)
