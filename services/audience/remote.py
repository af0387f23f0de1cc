"""Remote groups: the manual's paginated contract, read strictly.

`GET <url>&pagina=N` (N from 1) answers `application/json`
`{"tamanhoPagina": int, "pagina": int, "totalRegistros": int, "registros": [{"nome", "email"}]}`.
Page 1 fixes the page size and the total; every later page must agree with them, carry its own
number, hold exactly the records it should (`tamanhoPagina`, the rest on the last page) and not
repeat another page. Anything else is a `RemoteGroupError` naming the page, so a campaign fails
with a reason instead of going out to a half or doubled list.

The URL carries a secret token: only `redact_url(url)` is ever logged or shown, exception texts
from httpx (which contain the URL) are never passed on, and httpx's own request log is redacted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from services.audience.safe_http import (
    DestinationPolicy,
    Resolver,
    SafeTransport,
    UnsafeDestination,
    check_url,
    system_resolver,
)
from services.audience.settings import AudienceSettings

logger = logging.getLogger(__name__)

PAGE_PARAM = "pagina"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Statuses worth another try: the server is overloaded or briefly broken, not refusing us.
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RemoteMember:
    """One record of a remote group, as received (the caller validates the address)."""

    name: str
    email: str


class RemoteGroupError(Exception):
    """A remote group that cannot be read; `reason` is shown to users (pt-BR, never the token)."""

    def __init__(self, reason: str, page: int | None = None) -> None:
        self.page = page
        self.reason = reason
        super().__init__(reason if page is None else f"página {page}: {reason}")


@dataclass(frozen=True)
class RemoteOptions:
    """How a remote group is fetched; `from_settings` is the production source."""

    policy: DestinationPolicy = field(default_factory=DestinationPolicy)
    pages_in_flight: int = 4
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_retries: int = 4
    retry_backoff: float = 0.5
    retry_max_delay: float = 30.0
    max_records: int = 2_000_000
    max_page_bytes: int = 8 * 1024 * 1024
    max_redirects: int = 3
    resolver: Resolver = system_resolver

    @classmethod
    def from_settings(cls, settings: AudienceSettings) -> RemoteOptions:
        """The options the service's settings ask for."""
        return cls(
            policy=DestinationPolicy.of(settings.REMOTE_ALLOWED_NETWORKS, settings.REMOTE_ALLOWED_HOSTS),
            pages_in_flight=settings.REMOTE_PAGES_IN_FLIGHT,
            connect_timeout=settings.REMOTE_CONNECT_TIMEOUT,
            read_timeout=settings.REMOTE_READ_TIMEOUT,
            max_retries=settings.REMOTE_MAX_RETRIES,
            retry_backoff=settings.REMOTE_RETRY_BACKOFF,
            retry_max_delay=settings.REMOTE_RETRY_MAX_DELAY,
            max_records=settings.REMOTE_MAX_RECORDS,
            max_page_bytes=settings.REMOTE_MAX_PAGE_BYTES,
            max_redirects=settings.REMOTE_MAX_REDIRECTS,
        )


def redact_url(url: str | httpx.URL) -> str:
    """The URL with user-info and every query value except `pagina` hidden (a bare `?secret` too)."""
    parts = urlsplit(str(url))
    netloc = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc:
        netloc = f"***@{netloc}"
    query = "&".join(
        pair if key == PAGE_PARAM else f"{key}=***" if sep else "***"
        for pair in parts.query.split("&")
        if pair
        for key, sep, _ in [pair.partition("=")]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def validate_remote_url(url: str, options: RemoteOptions) -> None:
    """Refuse up front a URL that can never be fetched: scheme, host, user-info, forbidden address."""
    try:
        parsed = check_url(url, options.policy)
    except UnsafeDestination as exc:
        raise RemoteGroupError(exc.reason) from None
    if PAGE_PARAM in parsed.params:
        raise RemoteGroupError(
            f"a URL não deve conter o parâmetro '{PAGE_PARAM}': ele é acrescentado a cada página"
        )


def _page_url(url: str, page: int) -> str:
    # Appended as text, not through a query parser, so the token reaches the server byte for byte.
    base = url.partition("#")[0]
    separator = "" if base.endswith(("?", "&")) else "&" if "?" in base else "?"
    return f"{base}{separator}{PAGE_PARAM}={page}"


class _RedactHttpxLog(logging.Filter):
    """httpx logs every request's full URL at INFO: hide its token before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def _install_log_redaction() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactHttpxLog) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactHttpxLog())


@dataclass(frozen=True)
class _Page:
    number: int
    size: int
    total: int
    members: list[RemoteMember]


class _Retryable(Exception):
    """A failure worth another try; `wait` is the server's Retry-After, if it gave one."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


def _retry_after(value: str | None, cap: float) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), capped; None when absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return min(float(value), cap)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max((when - datetime.now(UTC)).total_seconds(), 0.0), cap)


def _backoff(attempt: int, options: RemoteOptions) -> float:
    # Exponential with "equal jitter": at least half the step, so retries are never instant, and
    # spread so that pages failing together do not come back together.
    step = min(options.retry_max_delay, options.retry_backoff * 2.0**attempt)
    return step / 2 + random.uniform(0, step / 2)


def _int_field(body: dict[str, Any], name: str, page: int) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RemoteGroupError(f"o campo '{name}' falta ou não é um número inteiro válido", page)
    return value


def _parse(raw: bytes, page: int) -> _Page:
    """Decode and check the shape of one page (consistency with other pages is checked by the caller)."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise RemoteGroupError("a resposta não é um JSON válido", page) from None
    if not isinstance(body, dict):
        raise RemoteGroupError("a resposta não é um objeto JSON", page)
    size, number, total = (_int_field(body, n, page) for n in ("tamanhoPagina", "pagina", "totalRegistros"))
    if size == 0:
        raise RemoteGroupError("'tamanhoPagina' é zero", page)
    if number != page:
        raise RemoteGroupError(f"o campo 'pagina' veio {number}, mas foi pedida a página {page}", page)
    records = body.get("registros")
    if not isinstance(records, list):
        raise RemoteGroupError("o campo 'registros' falta ou não é uma lista", page)
    members = []
    for index, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise RemoteGroupError(f"o registro {index} não é um objeto", page)
        name, email = record.get("nome"), record.get("email")
        if not isinstance(name, str) or not isinstance(email, str):
            raise RemoteGroupError(f"o registro {index} não tem 'nome' e 'email' como texto", page)
        members.append(RemoteMember(name, email))
    return _Page(number, size, total, members)


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class _Fetcher:
    """One remote group's fetch: the client, the page URLs, the retry policy."""

    def __init__(self, client: httpx.AsyncClient, url: str, options: RemoteOptions) -> None:
        self._client = client
        self._url = url
        self._options = options

    async def page(self, number: int) -> _Page:
        """Page `number`, retried on transient failures; RemoteGroupError when it cannot be had."""
        options = self._options
        attempt = 0
        while True:
            try:
                return _parse(await self._body(number), number)
            except _Retryable as exc:
                if attempt == options.max_retries:
                    raise RemoteGroupError(f"{exc.reason} (após {attempt + 1} tentativas)", number) from None
                delay = exc.wait if exc.wait is not None else _backoff(attempt, options)
                attempt += 1
                logger.warning(
                    "remote group %s page %d: %s; retry %d in %.2f s",
                    redact_url(self._url),
                    number,
                    exc.reason,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _body(self, number: int) -> bytes:
        url = _page_url(self._url, number)
        for _ in range(self._options.max_redirects + 1):
            try:
                async with self._client.stream("GET", url) as response:
                    if response.status_code not in _REDIRECTS:
                        return await self._read(response, number)
                    location = response.headers.get("location")
                    if not location:
                        raise RemoteGroupError("redirecionamento sem destino", number)
                    url = str(response.url.join(location))
            except UnsafeDestination as exc:
                raise RemoteGroupError(exc.reason, number) from None
            except httpx.TimeoutException:
                raise _Retryable("tempo esgotado esperando o servidor") from None
            except httpx.ConnectError:
                raise _Retryable("não foi possível conectar ao servidor") from None
            except httpx.TransportError:
                # Dropped connection, truncated body, protocol error: the URL stays out of the message.
                raise _Retryable("a conexão com o servidor foi interrompida") from None
            try:
                check_url(url, self._options.policy)
            except UnsafeDestination as exc:
                raise RemoteGroupError(f"redirecionamento recusado: {exc.reason}", number) from None
        raise RemoteGroupError(f"mais de {self._options.max_redirects} redirecionamentos", number)

    async def _read(self, response: httpx.Response, number: int) -> bytes:
        status = response.status_code
        if status in _RETRYABLE_STATUS:
            wait = _retry_after(response.headers.get("retry-after"), self._options.retry_max_delay)
            raise _Retryable(f"o servidor respondeu HTTP {status}", wait)
        if status != 200:
            raise RemoteGroupError(f"o servidor respondeu HTTP {status}", number)
        content_type = response.headers.get("content-type", "")
        if not _is_json(content_type):
            shown = content_type.partition(";")[0][:60] or "nenhum"
            raise RemoteGroupError(f"tipo de conteúdo '{shown}', esperado application/json", number)
        limit = self._options.max_page_bytes
        too_big = RemoteGroupError(f"a resposta passa do limite de {limit} bytes", number)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        body = bytearray()
        # Decoded bytes are counted, so a small compressed body that inflates past the limit stops too.
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise too_big
        return bytes(body)


def _check_against_first(page: _Page, first: _Page) -> None:
    if page.total != first.total:
        raise RemoteGroupError(
            f"'totalRegistros' mudou de {first.total} para {page.total} durante a leitura", page.number
        )
    if page.size != first.size:
        raise RemoteGroupError(
            f"'tamanhoPagina' mudou de {first.size} para {page.size} durante a leitura", page.number
        )


def _check_count(page: _Page, pages: int) -> None:
    expected = page.size if page.number < pages else page.total - (pages - 1) * page.size
    got = len(page.members)
    if got == expected:
        return
    if got == 0:
        reason = f"página vazia antes de completar os {page.total} registros anunciados"
    elif got < expected:
        reason = f"página incompleta: {got} registros, esperados {expected}"
    else:
        reason = f"{got} registros, mais que os {expected} esperados"
    raise RemoteGroupError(reason, page.number)


async def fetch_remote_group(url: str, options: RemoteOptions) -> AsyncGenerator[list[RemoteMember], None]:
    """The group's records page by page, in order 1..n, fetching up to `pages_in_flight` ahead.

    An async generator (an AsyncIterator with `aclose()`): closing it early cancels the pages in flight.
    """
    validate_remote_url(url, options)
    _install_log_redaction()
    timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout)
    limits = httpx.Limits(
        max_connections=options.pages_in_flight, max_keepalive_connections=options.pages_in_flight
    )
    transport = SafeTransport(options.policy, limits=limits, resolver=options.resolver)
    async with httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False) as client:
        fetcher = _Fetcher(client, url, options)
        first = await fetcher.page(1)
        if first.total > options.max_records:
            raise RemoteGroupError(
                f"o grupo anuncia {first.total} registros, acima do limite de {options.max_records}", 1
            )
        # An empty group is one empty page 1.
        pages = max(1, -(-first.total // first.size))
        seen: dict[int, int] = {}
        in_flight: deque[asyncio.Task[_Page]] = deque()
        following = iter(range(2, pages + 1))
        try:
            page: _Page | None = first
            while page is not None:
                _check_against_first(page, first)
                _check_count(page, pages)
                # Page content equality by hash: a collision among at most max_records pages is
                # negligible, and keeping the pages themselves would defeat bounded memory.
                fingerprint = hash(tuple(page.members))
                if fingerprint in seen:
                    raise RemoteGroupError(f"conteúdo repetido da página {seen[fingerprint]}", page.number)
                seen[fingerprint] = page.number
                for number in following:
                    in_flight.append(asyncio.create_task(fetcher.page(number)))
                    if len(in_flight) >= options.pages_in_flight:
                        break
                if page.members:
                    yield page.members
                page = await in_flight.popleft() if in_flight else None
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
