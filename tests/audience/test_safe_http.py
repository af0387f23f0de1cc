"""SSRF: refused schemes and addresses, names resolving inward, redirects, DNS rebinding, the allow-list."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

import httpcore
import httpx
import pytest

from devtools.remote_group_server import RemoteGroupServer
from services.audience.remote import RemoteGroupError, RemoteOptions, fetch_remote_group
from services.audience.safe_http import (
    DestinationPolicy,
    PinnedBackend,
    Resolver,
    SafeTransport,
    UnsafeDestination,
    check_url,
)

LOCAL = DestinationPolicy.of(["127.0.0.1/32"])
OPTIONS = RemoteOptions(policy=LOCAL, retry_backoff=0.01, max_retries=0)
LIMITS = httpx.Limits(max_connections=1)


@pytest.fixture(scope="module")
def server() -> Iterator[RemoteGroupServer]:
    """The contract server: 25 records in pages of 10, no token needed."""
    group = RemoteGroupServer(records=25, page_size=10).start()
    yield group
    group.stop()


class Answers:
    """A resolver that gives each round of answers once, then repeats the last: a rebinding DNS server."""

    def __init__(self, *rounds: Sequence[str]) -> None:
        self.rounds = list(rounds)
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        return self.rounds.pop(0) if len(self.rounds) > 1 else self.rounds[0]


class Recording(httpcore.AsyncNetworkBackend):
    """Notes the address each connection was opened to; connects through `inner`, or hands out `wire`."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, wire: Wire | None = None) -> None:
        self.inner = inner
        self.wire = wire
        self.connected_to: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected_to.append(host)
        if self.wire is not None:
            return self.wire
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)


class Wire(httpcore.AsyncMockStream):
    """A canned connection that keeps what the client wrote and the name TLS was started for."""

    def __init__(self, answer: list[bytes]) -> None:
        super().__init__(answer)
        self.written = b""
        self.tls_server_hostname: str | None = None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.written += buffer

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
    ) -> httpcore.AsyncNetworkStream:
        self.tls_server_hostname = server_hostname
        return self


def client(
    resolver: Resolver, inner: httpcore.AsyncNetworkBackend, policy: DestinationPolicy
) -> httpx.AsyncClient:
    transport = SafeTransport(policy, limits=LIMITS, resolver=resolver, network_backend=inner)
    return httpx.AsyncClient(transport=transport)


class TestCheckUrl:
    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("ftp://grupos.example.com/lista", "só são aceitas URLs http ou https"),
            ("file:///etc/passwd", "só são aceitas URLs http ou https"),
            ("gopher://grupos.example.com/", "só são aceitas URLs http ou https"),
            ("https://user:senha@grupos.example.com/", "a URL não pode conter usuário e senha"),
            ("http://127.0.0.1:8080/grupo", "o endereço 127.0.0.1 é interno ou reservado"),
            ("http://10.0.0.5/grupo", "o endereço 10.0.0.5 é interno ou reservado"),
            ("http://172.16.3.4/grupo", "o endereço 172.16.3.4 é interno ou reservado"),
            ("http://192.168.1.10/grupo", "o endereço 192.168.1.10 é interno ou reservado"),
            ("http://169.254.169.254/latest/meta-data/", "o endereço 169.254.169.254 é interno ou reservado"),
            ("http://100.64.0.1/", "o endereço 100.64.0.1 é interno ou reservado"),
            ("http://[::1]/", "o endereço ::1 é interno ou reservado"),
            ("http://[fe80::1]/", "o endereço fe80::1 é interno ou reservado"),
            ("http://[fd00::1]/", "o endereço fd00::1 é interno ou reservado"),
            ("http://[::ffff:127.0.0.1]/", "o endereço ::ffff:7f00:1 é interno ou reservado"),
            ("http://localhost:8000/", "o servidor local não é permitido"),
            ("http://app.localhost/", "o servidor local não é permitido"),
        ],
    )
    def test_refuses(self, url: str, reason: str) -> None:
        with pytest.raises(UnsafeDestination) as caught:
            check_url(url, DestinationPolicy())

        assert caught.value.reason == reason

    @pytest.mark.parametrize(
        "url",
        ["https://grupos.example.com/envio?token=1", "http://8.8.8.8/g", "http://[2001:4860:4860::8888]/"],
    )
    def test_lets_public_urls_through(self, url: str) -> None:
        assert check_url(url, DestinationPolicy()) == httpx.URL(url)

    def test_allow_list_lets_listed_networks_and_hosts_through(self) -> None:
        policy = DestinationPolicy.of(["10.20.0.0/16"], ["localhost"])

        assert check_url("http://10.20.1.2/g", policy).host == "10.20.1.2"
        assert check_url("http://LOCALHOST:9000/g", policy).port == 9000
        with pytest.raises(UnsafeDestination):
            check_url("http://10.21.0.1/g", policy)


class TestDestinationPolicy:
    @pytest.mark.parametrize(
        "address",
        [
            "127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.0.1", "169.254.169.254",
            "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "198.18.0.1",
            "::1", "::", "fe80::1", "fc00::1", "fd12::1", "ff0e::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
            "2002:7f00:1::1", "64:ff9b::a9fe:a9fe",
        ],
    )  # fmt: skip
    def test_refuses_every_inward_address(self, address: str) -> None:
        assert not DestinationPolicy().address_allowed(ipaddress.ip_address(address))

    @pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"])
    def test_allows_public_addresses(self, address: str) -> None:
        assert DestinationPolicy().address_allowed(ipaddress.ip_address(address))

    def test_allowed_networks_open_only_themselves(self) -> None:
        policy = DestinationPolicy.of(["127.0.0.1/32", "fd00::/8"])

        assert policy.address_allowed(ipaddress.ip_address("127.0.0.1"))
        assert policy.address_allowed(ipaddress.ip_address("fd00::5"))
        assert not policy.address_allowed(ipaddress.ip_address("127.0.0.2"))


class TestPinnedBackend:
    @pytest.mark.parametrize("name", ["localhost", "2130706433"])  # the decimal form of 127.0.0.1, too
    async def test_a_name_the_system_resolves_to_loopback_is_refused(self, name: str) -> None:
        with pytest.raises(UnsafeDestination, match="aponta para um endereço interno"):
            await PinnedBackend(DestinationPolicy()).checked_addresses(name, 80)

    async def test_one_inward_address_among_public_ones_refuses_the_name(self) -> None:
        backend = PinnedBackend(DestinationPolicy(), Answers(["8.8.8.8", "10.0.0.9"]))

        with pytest.raises(UnsafeDestination):
            await backend.checked_addresses("mixed.example", 443)

    async def test_an_allow_listed_name_may_resolve_inward(self) -> None:
        backend = PinnedBackend(DestinationPolicy.of(hosts=["grupos.intranet"]), Answers(["10.0.0.9"]))

        assert await backend.checked_addresses("grupos.intranet", 443) == ["10.0.0.9"]

    async def test_httpx_connects_to_the_checked_address_with_the_names_host_and_sni(self) -> None:
        # A canned answer stands in for the public server; what matters is where the socket went,
        # and that TLS (SNI, certificate check) and the Host header still speak of the name.
        wire = Wire([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok"])
        inner = Recording(httpcore.AnyIOBackend(), wire)
        async with client(Answers(["93.184.215.14"]), inner, DestinationPolicy()) as http:
            response = await http.get("https://grupos.example.com/envio")

        assert (response.status_code, response.text) == (200, "ok")
        assert inner.connected_to == ["93.184.215.14"]
        assert wire.tls_server_hostname == "grupos.example.com"
        assert b"\r\nHost: grupos.example.com\r\n" in wire.written

    async def test_httpx_refuses_a_name_resolving_inward(self) -> None:
        inner = Recording(httpcore.AnyIOBackend())
        async with client(Answers(["10.0.0.8"]), inner, DestinationPolicy()) as http:
            with pytest.raises(UnsafeDestination, match=r"intranet\.test aponta para um endereço interno"):
                await http.get("http://intranet.test/grupo")

        assert inner.connected_to == []


class TestDnsRebinding:
    async def test_the_connection_uses_the_answer_that_was_checked(self, server: RemoteGroupServer) -> None:
        # First answer allowed, every later one the metadata service: only a client that resolves
        # once per connection and connects to that very answer reaches the server.
        answers = Answers(["127.0.0.1"], ["169.254.169.254"])
        inner = Recording(httpcore.AnyIOBackend())
        url = server.url(host="rebind.test", pagina=1)
        async with client(answers, inner, LOCAL) as http:
            first = await http.get(url)
            again = await http.get(url)

        assert (first.status_code, again.status_code) == (200, 200)
        assert (answers.asked, inner.connected_to) == (["rebind.test"], ["127.0.0.1"])

        async with client(answers, inner, LOCAL) as http:
            with pytest.raises(UnsafeDestination):
                await http.get(url)
        assert inner.connected_to == ["127.0.0.1"]

    async def test_fetch_remote_group_resolves_through_the_options_resolver(
        self, server: RemoteGroupServer
    ) -> None:
        answers = Answers(["127.0.0.1"], ["169.254.169.254"])
        opts = replace(OPTIONS, resolver=answers, pages_in_flight=1)

        pages = [page async for page in fetch_remote_group(server.url(host="rebind.test"), opts)]

        assert sum(map(len, pages)) == 25
        assert answers.asked == ["rebind.test"]


class TestRedirects:
    async def fetch(self, url: str, opts: RemoteOptions = OPTIONS) -> int:
        return sum([len(page) async for page in fetch_remote_group(url, opts)])

    async def test_a_redirect_to_an_allowed_address_is_followed(self, server: RemoteGroupServer) -> None:
        url = server.url(fault="redirect", fault_page=1, to=server.url())

        assert await self.fetch(url) == 25

    @pytest.mark.parametrize(
        ("to", "reason"),
        [
            (
                "http://169.254.169.254/latest/meta-data",
                "redirecionamento recusado: o endereço 169.254.169.254",
            ),
            ("http://127.0.0.2:{port}/grupo", "redirecionamento recusado: o endereço 127.0.0.2"),
            ("http://[::1]:{port}/grupo", "redirecionamento recusado: o endereço ::1"),
            ("file:///etc/passwd", "redirecionamento recusado: só são aceitas URLs http ou https"),
            ("http://intranet.test:{port}/grupo", "o servidor intranet.test aponta para um endereço interno"),
        ],
    )
    async def test_a_redirect_inward_is_refused(
        self, server: RemoteGroupServer, to: str, reason: str
    ) -> None:
        url = server.url(fault="redirect", fault_page=1, to=to.format(port=server.port))
        opts = replace(OPTIONS, resolver=Answers(["10.0.0.7"]))

        with pytest.raises(RemoteGroupError) as caught:
            await self.fetch(url, opts)

        assert caught.value.page == 1
        assert caught.value.reason.startswith(reason)

    async def test_redirects_past_the_limit_are_an_error(self, server: RemoteGroupServer) -> None:
        url = server.url(fault="redirect", fault_page=2, to=server.url())

        with pytest.raises(RemoteGroupError) as caught:
            await self.fetch(url, replace(OPTIONS, max_redirects=0))

        assert (caught.value.page, caught.value.reason) == (2, "mais de 0 redirecionamentos")
