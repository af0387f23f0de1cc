"""A local server for the manual's remote-group contract, honest by default and faulty on request.

`GET /grupo?pagina=N` answers `{"tamanhoPagina", "pagina", "totalRegistros", "registros"}` with
records generated on the fly (record i is `Pessoa {i}` / `pessoa{i}@example.com`), so a million
records cost no memory. It is the baseline of the remote-group benchmark: keep it lean.

Run alone: `python -m devtools.remote_group_server --records 1000000 --page-size 1000 --port 8010`.
Tests use `RemoteGroupServer` in-process (its own thread and event loop, a port of its own).

Query parameters besides `pagina` (the contract's own) shape one URL's answers:
- `records`, `page_size`: override the server's group size;
- `fault=<mode>` applied to page `fault_page` (default 2), to its first `failures` attempts only
  when given (attempts are counted per `run` value and page, see `attempts`), modes:
  `wrong_page` (answers another `pagina`), `repeat` (page N-1's records again), `short` (one
  record missing), `empty` (no records), `total` (`totalRegistros` + 1), `broken_json`,
  `content_type` (text/html), `bad_record` (a record whose `nome` is a number), `oversized` (a body that never ends), `fail` (HTTP `status`,
  default 503, with `Retry-After: <retry_after>` seconds or, with `retry_after_format=date`, as an
  HTTP date), `slow` (waits `delay` seconds first), `drop` (the connection closes mid-body),
  `redirect` (307 to `to`, with `pagina` appended).
With a `token` configured, a request without `token=<it>` gets 403.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

PATH = "/grupo"


def page_body(
    page: int,
    size: int,
    total: int,
    *,
    pagina: int | None = None,
    shown_total: int | None = None,
    first: int | None = None,
    count: int | None = None,
) -> bytes:
    """One page's JSON; the keyword overrides produce the inconsistent variants."""
    start = (page - 1) * size + 1 if first is None else first
    end = min(start + size, total + 1) if count is None else start + count
    records = ",".join(f'{{"nome":"Pessoa {i}","email":"pessoa{i}@example.com"}}' for i in range(start, end))
    number = page if pagina is None else pagina
    announced = total if shown_total is None else shown_total
    return (
        f'{{"tamanhoPagina":{size},"pagina":{number},"totalRegistros":{announced},"registros":[{records}]}}'
    ).encode()


class _Dropped(Response):
    """Announces the whole body, sends half, and ends: the client sees the connection close mid-body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send(
            {"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True}
        )


async def _endless_json() -> AsyncIterator[bytes]:
    yield b'{"tamanhoPagina":1,"pagina":2,"totalRegistros":2,"registros":['
    filler = b" " * 65536
    while True:
        yield filler
        # Let the loop notice the client went away instead of spinning on a full socket buffer.
        await asyncio.sleep(0)


@dataclass
class RemoteGroupServer:
    """The contract on 127.0.0.1, in a thread of its own; `url()` builds a group URL."""

    records: int = 1000
    page_size: int = 100
    token: str | None = None
    # Requests seen per (run, page) for faulted pages: tests read retries here.
    attempts: Counter[tuple[str, int]] = field(default_factory=Counter)
    # Every request answered or refused: tests read how far a client fetched ahead.
    served: int = 0
    _socket: socket.socket | None = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (once started)."""
        assert self._socket is not None, "start() first"
        port: int = self._socket.getsockname()[1]
        return port

    def url(self, host: str = "127.0.0.1", **params: str | int | float) -> str:
        """A group URL on this server, carrying the token (when one is required) and `params`."""
        query = ({"token": self.token} if self.token else {}) | params
        return f"http://{host}:{self.port}{PATH}" + (f"?{urlencode(query)}" if query else "")

    def app(self) -> Starlette:
        """The ASGI application (usable without the thread, e.g. under another ASGI server)."""
        return Starlette(routes=[Route(PATH, self._page)])

    async def _page(self, request: Request) -> Response:
        self.served += 1
        query = request.query_params
        if self.token is not None and query.get("token") != self.token:
            return JSONResponse({"erro": "token inválido"}, status_code=403)
        try:
            page = int(query["pagina"])
            total = int(query.get("records", self.records))
            size = int(query.get("page_size", self.page_size))
        except (KeyError, ValueError):
            return JSONResponse({"erro": "parâmetros inválidos"}, status_code=400)
        fault = query.get("fault")
        if fault and page == int(query.get("fault_page", 2)):
            attempt = self.attempts[query.get("run", ""), page] = (
                self.attempts[query.get("run", ""), page] + 1
            )
            if "failures" not in query or attempt <= int(query["failures"]):
                return await self._fault(fault, request, page, size, total)
        return Response(page_body(page, size, total), media_type="application/json")

    async def _fault(self, fault: str, request: Request, page: int, size: int, total: int) -> Response:
        query = request.query_params
        json_type = "application/json"
        match fault:
            case "wrong_page":
                return Response(page_body(page, size, total, pagina=page + 1), media_type=json_type)
            case "repeat":
                return Response(
                    page_body(page, size, total, first=(page - 2) * size + 1), media_type=json_type
                )
            case "short":
                return Response(page_body(page, size, total, count=size - 1), media_type=json_type)
            case "empty":
                return Response(page_body(page, size, total, count=0), media_type=json_type)
            case "total":
                return Response(page_body(page, size, total, shown_total=total + 1), media_type=json_type)
            case "broken_json":
                return Response(page_body(page, size, total)[:-7], media_type=json_type)
            case "bad_record":
                answer = json.loads(page_body(page, size, total))
                answer["registros"][0]["nome"] = 1
                return JSONResponse(answer)
            case "content_type":
                return Response(page_body(page, size, total), media_type="text/html")
            case "oversized":
                return StreamingResponse(_endless_json(), media_type=json_type)
            case "fail":
                headers = {}
                if "retry_after" in query:
                    seconds = query["retry_after"]
                    dated = query.get("retry_after_format") == "date"
                    headers["Retry-After"] = (
                        formatdate(time.time() + float(seconds), usegmt=True) if dated else seconds
                    )
                status = int(query.get("status", 503))
                return JSONResponse({"erro": "falha simulada"}, status_code=status, headers=headers)
            case "slow":
                await asyncio.sleep(float(query.get("delay", 1)))
                return Response(page_body(page, size, total), media_type=json_type)
            case "drop":
                return _Dropped(page_body(page, size, total), media_type=json_type)
            case "redirect":
                target = query["to"]
                separator = "&" if "?" in target else "?"
                return RedirectResponse(f"{target}{separator}pagina={page}", status_code=307)
        return JSONResponse({"erro": f"falha desconhecida: {fault}"}, status_code=400)

    def start(self, within: float = 10.0) -> RemoteGroupServer:
        """Listen on a free port (bound here, so nobody takes it in between) in a background thread."""
        self._socket = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(self.app(), log_level="warning", access_log=False, lifespan="off")
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + within
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the remote group server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None


def main() -> None:
    """Command line: serve one group until interrupted."""
    parser = argparse.ArgumentParser(description="Local server of the remote-group contract (manual).")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--token", default=None, help="require ?token=<this> (403 without it)")
    args = parser.parse_args()
    group = RemoteGroupServer(records=args.records, page_size=args.page_size, token=args.token)
    print(f"serving http://127.0.0.1:{args.port}{PATH}", flush=True)
    uvicorn.run(
        group.app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off"
    )


if __name__ == "__main__":
    main()
