"""Remote groups against the local contract server: honest pages, every misbehaviour, retries, the token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from devtools.remote_group_server import RemoteGroupServer
from services.audience.remote import RemoteGroupError, RemoteMember, RemoteOptions, fetch_remote_group
from services.audience.safe_http import DestinationPolicy

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
        ],
    )
    async def test_is_an_error_naming_the_page(
        self, server: RemoteGroupServer, fault: str, page: int, reason: str
    ) -> None:
        with pytest.raises(RemoteGroupError) as caught:
            await fetch(server.url(fault=fault, fault_page=page))

        assert (caught.value.page, caught.value.reason) == (page, reason)
        assert str(caught.value) == f"página {page}: {reason}"
