"""The local remote-group server: the manual's contract when honest, each fault when asked."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import parsedate_to_datetime

import httpx
import pytest

from devtools.remote_group_server import RemoteGroupServer, page_body
from devtools.smtp_sink import free_port
from tests.support import eventually

TOKEN = "abc123"


@pytest.fixture(scope="module")
def server() -> Iterator[RemoteGroupServer]:
    """7 records in pages of 5 (the manual's example), token required."""
    group = RemoteGroupServer(records=7, page_size=5, token=TOKEN).start()
    yield group
    group.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


class TestContract:
    async def test_serves_the_manuals_example_in_two_pages(
        self, server: RemoteGroupServer, http: httpx.AsyncClient
    ) -> None:
        first = await http.get(server.url(pagina=1))
        second = (await http.get(server.url(pagina=2))).json()

        assert first.headers["content-type"] == "application/json"
        assert first.json() == {
            "tamanhoPagina": 5,
            "pagina": 1,
            "totalRegistros": 7,
            "registros": [{"nome": f"Pessoa {i}", "email": f"pessoa{i}@example.com"} for i in range(1, 6)],
        }
        assert [r["email"] for r in second["registros"]] == ["pessoa6@example.com", "pessoa7@example.com"]

    async def test_refuses_a_request_without_the_token(
        self, server: RemoteGroupServer, http: httpx.AsyncClient
    ) -> None:
        response = await http.get(f"http://127.0.0.1:{server.port}/grupo?pagina=1&token=errado")

        assert response.status_code == 403

    def test_page_body_variants(self) -> None:
        assert json.loads(page_body(2, 3, 4, pagina=9, shown_total=5)) == {
            "tamanhoPagina": 3,
            "pagina": 9,
            "totalRegistros": 5,
            "registros": [{"nome": "Pessoa 4", "email": "pessoa4@example.com"}],
        }


class TestFaults:
    async def test_a_fault_hits_only_its_page_and_its_first_failures(
        self, server: RemoteGroupServer, http: httpx.AsyncClient
    ) -> None:
        url = server.url(fault="fail", status=500, failures=2, run="count")

        statuses = [(await http.get(f"{url}&pagina={page}")).status_code for page in (1, 2, 2, 2)]

        assert statuses == [200, 500, 500, 200]
        assert server.attempts["count", 2] == 3

    async def test_retry_after_as_an_http_date(
        self, server: RemoteGroupServer, http: httpx.AsyncClient
    ) -> None:
        url = server.url(fault="fail", status=429, retry_after=30, retry_after_format="date", pagina=2)

        response = await http.get(url)

        assert response.status_code == 429
        wait = parsedate_to_datetime(response.headers["retry-after"]).timestamp() - time.time()
        assert 25 < wait <= 31

    async def test_redirect_appends_the_page(
        self, server: RemoteGroupServer, http: httpx.AsyncClient
    ) -> None:
        response = await http.get(server.url(fault="redirect", to="http://10.0.0.1/x?a=1", pagina=2))

        assert (response.status_code, response.headers["location"]) == (307, "http://10.0.0.1/x?a=1&pagina=2")

    async def test_drop_closes_the_connection_mid_body(
        self, server: RemoteGroupServer, http: httpx.AsyncClient
    ) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(server.url(fault="drop", pagina=2))

    async def test_oversized_never_ends(self, server: RemoteGroupServer, http: httpx.AsyncClient) -> None:
        read = 0
        async with http.stream("GET", server.url(fault="oversized", pagina=2)) as response:
            async for chunk in response.aiter_bytes():
                read += len(chunk)
                if read > 10_000_000:
                    break

        assert read > 10_000_000


class TestCommandLine:
    async def test_serves_the_group_given_on_the_command_line(self, http: httpx.AsyncClient) -> None:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devtools.remote_group_server", "--records", "3", "--page-size", "2",
            "--port", str(port), stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

        async def answered() -> httpx.Response | None:
            try:
                return await http.get(f"http://127.0.0.1:{port}/grupo?pagina=2")
            except httpx.ConnectError:
                return None

        try:
            response = await eventually(answered, within=20)
        finally:
            process.terminate()
            await process.wait()

        assert response is not None
        assert response.json()["registros"] == [{"nome": "Pessoa 3", "email": "pessoa3@example.com"}]
