"""HTTP to user-supplied URLs without SSRF: public destinations only, checked where the socket connects.

Rules (OWASP SSRF cheat sheet; peers' CVEs with validate-then-fetch):
- only http and https, no user-info in the URL;
- every address a host name resolves to must be public (or on the explicit allow-list), else the
  host is refused, even when another address would be fine;
- the check happens inside the connection, on the one resolution whose result the socket then
  uses, so DNS rebinding (public at check time, 169.254.169.254 at connect time) has no window;
- redirects are not followed by httpx; callers follow them hop by hop through `check_url`, and
  each hop connects through the same checked path.
TLS is untouched: httpcore still verifies the certificate and sends SNI for the host name,
because only the TCP connect receives the pinned address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses to connect to, in order of preference. Injectable for tests.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Ranges `is_global` lets through on some Python versions, or that wrap another address.
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeDestination(Exception):
    """A URL or address that must not be fetched; `reason` is Brazilian Portuguese, without secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DestinationPolicy:
    """What besides the public internet may be reached: allow-listed networks and host names."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def of(cls, networks: Iterable[IPNetwork | str] = (), hosts: Iterable[str] = ()) -> DestinationPolicy:
        """A policy from CIDR strings or networks and host names (matched case-insensitively)."""
        return cls(
            tuple(ipaddress.ip_network(n) for n in networks),
            frozenset(h.lower().rstrip(".") for h in hosts),
        )

    def host_allowed(self, host: str) -> bool:
        """True when the host name itself is allow-listed (its addresses are then not checked)."""
        return host.lower().rstrip(".") in self.allowed_hosts

    def address_allowed(self, address: IPAddress) -> bool:
        """True for a public address, or one inside an allow-listed network."""
        if any(address in network for network in self.allowed_networks if network.version == address.version):
            return True
        return all(_is_public(a) for a in _embedded(address))


def _embedded(address: IPAddress) -> list[IPAddress]:
    """The address and every IPv4 address it carries (mapped, 6to4, NAT64, Teredo): each must pass."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.extend(address.teredo)
        if address in _NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _is_public(address: IPAddress) -> bool:
    # `is_global` alone lets multicast through, and misses CGNAT before Python 3.12.
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT)
    )


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_url(url: httpx.URL | str, policy: DestinationPolicy) -> httpx.URL:
    """Refuse, before any connection, a URL that is not http(s) or names a forbidden address."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise UnsafeDestination("a URL não é válida") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeDestination("só são aceitas URLs http ou https")
    if not parsed.host:
        raise UnsafeDestination("a URL não tem servidor")
    if parsed.userinfo:
        raise UnsafeDestination("a URL não pode conter usuário e senha")
    if policy.host_allowed(parsed.host):
        return parsed
    literal = _literal(parsed.host)
    if literal is not None and not policy.address_allowed(literal):
        raise UnsafeDestination(f"o endereço {literal} é interno ou reservado")
    if parsed.host == "localhost" or parsed.host.endswith(".localhost"):
        raise UnsafeDestination("o servidor local não é permitido")
    return parsed


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer for host, every address, in its order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that resolves once, checks every address, and connects to a checked one."""

    def __init__(
        self,
        policy: DestinationPolicy,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for host; raises UnsafeDestination if any is forbidden."""
        literal = _literal(host)
        addresses = [host.strip("[]")] if literal is not None else list(await self._resolver(host, port))
        if not addresses:
            raise UnsafeDestination(f"o nome {host} não tem endereço")
        if not self._policy.host_allowed(host):
            for address in addresses:
                parsed = _literal(address)
                if parsed is None or not self._policy.address_allowed(parsed):
                    raise UnsafeDestination(f"o servidor {host} aponta para um endereço interno ou reservado")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to the first checked address that answers (all of them passed the policy)."""
        try:
            # The connect timeout covers the resolution too: a stalled DNS server is a slow connect.
            async with asyncio.timeout(timeout):
                addresses = await self.checked_addresses(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"resolving {host} failed: {exc.strerror}") from None
        for address in addresses[:-1]:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue
        return await self._inner.connect_tcp(addresses[-1], port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: a Unix socket is a local destination by definition."""
        raise UnsafeDestination("sockets locais não são permitidos")

    async def sleep(self, seconds: float) -> None:
        """Delegate (httpcore uses it between its own connect retries)."""
        await self._inner.sleep(seconds)


class SafeTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a `PinnedBackend`, with no proxy from the environment.

    httpx 0.28 takes no network backend (encode/httpx PR #3749 proposes one), so the pool httpx
    built is replaced by an identical one with ours; httpx keeps mapping httpcore's exceptions.
    `tests/audience/test_safe_http.py` fails if a future httpx stops using `_pool`.
    """

    def __init__(
        self,
        policy: DestinationPolicy,
        *,
        limits: httpx.Limits,
        resolver: Resolver = system_resolver,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        # trust_env=False: HTTP(S)_PROXY from the environment would reroute around the check.
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(policy, resolver, network_backend),
        )
