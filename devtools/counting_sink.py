"""A lean SMTP sink that counts: for every accepted message, when it arrived, its envelope, its
campaign header and its size. For benchmarks and fault tests, where the aiosmtpd sink
(`devtools.smtp_sink`), which parses every message, would be the bottleneck.

A plain `asyncio.Protocol` speaks EHLO/HELO, MAIL, RCPT, DATA (dot-unstuffed), RSET, NOOP and
QUIT, pipelined or not. Nothing of the message is parsed except the `X-Mailer-Campaign` header
line, found with one `bytes.find` in the header block (exact spelling: the sender writes it so).
Every reply to MAIL, RCPT and the end of DATA comes from a `Responder`: `AcceptAll` now; a
fault-injecting responder (4xx for a while, dropped connections, 5xx for some recipients) plugs in
there without touching the protocol.

In-process: `CountingSink().start()` serves from its own thread (like `SmtpSink`). As a process:
`python -m devtools.counting_sink --port 2525 --report arrivals.jsonl` appends one JSON line per
accepted message as it arrives (so the file is complete at any moment, also after SIGKILL) and
exits on SIGTERM or SIGINT; `SinkProcess` starts it and reads that file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from shared.contracts.headers import CAMPAIGN_ID_HEADER

Reply = bytes
"""A whole reply as sent, CRLF included (`reply(250, "OK")`); `DROP` closes the connection instead."""

DROP: Reply = b""

_CRLF = b"\r\n"
# The DATA terminator: the CRLF ending the last line, a lone dot, CRLF.
_END_OF_DATA = b"\r\n.\r\n"
# A message with no line at all: the terminator's first CRLF was the one ending the DATA command.
_EMPTY_DATA = b".\r\n"
_CAMPAIGN_LINE = b"\n" + CAMPAIGN_ID_HEADER.encode() + b":"
_MAX_LINE = 4096
_MAX_MESSAGE = 64 * 1024 * 1024


def reply(code: int, text: str) -> Reply:
    """One reply line."""
    return f"{code} {text}\r\n".encode()


_GREETING = reply(220, "counting-sink ESMTP")
_EHLO = b"250-counting-sink\r\n250-8BITMIME\r\n250 SIZE %d\r\n" % _MAX_MESSAGE
_OK = reply(250, "OK")
_QUEUED = reply(250, "2.0.0 Message accepted")
_GO_AHEAD = reply(354, "End data with <CR><LF>.<CR><LF>")
_BYE = reply(221, "Bye")
_NEED_MAIL = reply(503, "5.5.1 MAIL first")
_NEED_RCPT = reply(503, "5.5.1 RCPT first")
_NESTED_MAIL = reply(503, "5.5.1 Sender already given")
_SYNTAX = reply(501, "5.5.4 Syntax error in address")
_UNKNOWN = reply(502, "5.5.2 Command not implemented")
_LINE_TOO_LONG = reply(500, "5.5.2 Line too long")
_TOO_BIG = reply(552, "5.3.4 Message too big")


@dataclass(frozen=True)
class Arrival:
    """One accepted message. `at` is `time.time()` when its last byte arrived; `data` is kept only
    when the sink is asked to (tests), never in the report."""

    at: float
    sender: str
    recipients: tuple[str, ...]
    campaign: str | None
    size: int
    data: bytes | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> str:
        """One line of the report."""
        return json.dumps(
            {
                "at": self.at,
                "from": self.sender,
                "to": self.recipients,
                "campaign": self.campaign,
                "size": self.size,
            }
        )

    @classmethod
    def from_json(cls, line: str | bytes) -> Arrival:
        """Read back a line of the report."""
        raw: dict[str, Any] = json.loads(line)
        return cls(raw["at"], raw["from"], tuple(raw["to"]), raw["campaign"], raw["size"])


class Responder(Protocol):
    """Decides the replies of a session: a reply starting with 2 accepts, `DROP` hangs up."""

    def mail(self, sender: str) -> Reply: ...

    def rcpt(self, sender: str, recipient: str) -> Reply: ...

    def data(self, arrival: Arrival) -> Reply: ...


class AcceptAll:
    """Takes every sender, recipient and message."""

    def mail(self, sender: str) -> Reply:
        return _OK

    def rcpt(self, sender: str, recipient: str) -> Reply:
        return _OK

    def data(self, arrival: Arrival) -> Reply:
        return _QUEUED


def _address(argument: bytes) -> str | None:
    """The address of `FROM:<a@b> SIZE=1` or `TO:<a@b>` (also without brackets); None if malformed."""
    colon = argument.find(b":")
    if colon < 0:
        return None
    rest = argument[colon + 1 :].strip()
    if rest.startswith(b"<"):
        close = rest.find(b">")
        return None if close < 0 else rest[1:close].decode("utf-8", "replace")
    return rest.split(b" ", 1)[0].decode("utf-8", "replace") if rest else None


def _campaign(message: bytes) -> str | None:
    """The X-Mailer-Campaign value, looked for in the header block only (the first header line is
    never it: Received/From/... come first in every message we send)."""
    head_end = message.find(b"\r\n\r\n")
    start = message.find(_CAMPAIGN_LINE, 0, head_end if head_end >= 0 else len(message))
    if start < 0:
        return None
    start += len(_CAMPAIGN_LINE)
    end = message.find(_CRLF, start)
    return message[start : end if end >= 0 else len(message)].strip().decode("ascii", "replace")


def _unstuff(raw: bytes) -> bytes:
    """Remove the dot SMTP adds in front of every line starting with a dot (RFC 5321 4.5.2)."""
    if raw.startswith(b".."):
        raw = raw[1:]
    return raw.replace(b"\r\n..", b"\r\n.")


class _Session(asyncio.Protocol):
    """One SMTP connection: commands line by line, then the message up to its terminator. All
    replies of one read are written at once, so a pipelining client costs one write per read."""

    def __init__(self, responder: Responder, on_arrival: Callable[[Arrival], None], keep_data: bool) -> None:
        self._responder = responder
        self._on_arrival = on_arrival
        self._keep_data = keep_data
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._in_data = False
        # Where to look for the terminator next: what was searched before holds none.
        self._scan_from = 0
        self._sender: str | None = None
        self._recipients: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(_GREETING)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        out: list[bytes] = []
        consumed = 0
        # Stops at incomplete input, at a hang-up, and after a DROP (what follows it is never read).
        while self._transport is not None and not (out and out[-1] == DROP):
            step = self._message(consumed, out) if self._in_data else self._command(consumed, out)
            if step is None:
                break
            consumed = step
        del self._buffer[:consumed]
        self._scan_from = max(0, self._scan_from - consumed)
        if self._transport is not None:
            self._send(out)

    def _send(self, out: list[bytes]) -> None:
        if self._transport is None or not out:
            return
        closing = out[-1] is _BYE or DROP in out
        if DROP in out:
            del out[out.index(DROP) :]
        if out:
            self._transport.write(b"".join(out))
        if closing:
            self._transport.close()
            self._transport = None

    def _command(self, start: int, out: list[bytes]) -> int | None:
        """Handle the command line at `start`; where the next input begins, None if incomplete."""
        buffer = self._buffer
        end = buffer.find(b"\n", start)
        if end < 0:
            if len(buffer) - start > _MAX_LINE:
                out += (_LINE_TOO_LONG, DROP)
                self._send(out)
            return None
        line = bytes(buffer[start:end]).rstrip(b"\r")
        verb = line[:4].upper()
        if verb == b"EHLO":
            out.append(_EHLO)
        elif verb == b"HELO":
            out.append(_OK)
        elif verb == b"MAIL":
            out.append(self._mail(line))
        elif verb == b"RCPT":
            out.append(self._rcpt(line))
        elif verb == b"DATA":
            if not self._recipients:
                out.append(_NEED_RCPT)
            else:
                out.append(_GO_AHEAD)
                self._in_data = True
                self._scan_from = end + 1
        elif verb == b"RSET":
            self._reset()
            out.append(_OK)
        elif verb == b"NOOP":
            out.append(_OK)
        elif verb == b"QUIT":
            out.append(_BYE)
            self._send(out)
            out.clear()
        else:
            out.append(_UNKNOWN)
        return end + 1

    def _mail(self, line: bytes) -> Reply:
        if self._sender is not None:
            return _NESTED_MAIL
        address = _address(line[4:])
        if address is None:
            return _SYNTAX
        answer = self._responder.mail(address)
        if answer.startswith(b"2"):
            self._sender = address
        return answer

    def _rcpt(self, line: bytes) -> Reply:
        if self._sender is None:
            return _NEED_MAIL
        address = _address(line[4:])
        if address is None:
            return _SYNTAX
        answer = self._responder.rcpt(self._sender, address)
        if answer.startswith(b"2"):
            self._recipients.append(address)
        return answer

    def _message(self, start: int, out: list[bytes]) -> int | None:
        """Take the message at `start` once its terminator is in; where the next input begins."""
        buffer = self._buffer
        if buffer.startswith(_EMPTY_DATA, start):
            body_end, next_start = start, start + len(_EMPTY_DATA)
        else:
            found = buffer.find(_END_OF_DATA, max(start, self._scan_from))
            if found < 0:
                if len(buffer) - start > _MAX_MESSAGE:
                    out += (_TOO_BIG, DROP)
                    self._send(out)
                    return None
                # The terminator may straddle this read and the next one.
                self._scan_from = max(start, len(buffer) - len(_END_OF_DATA) + 1)
                return None
            # The body keeps the CRLF that ends its last line.
            body_end, next_start = found + 2, found + len(_END_OF_DATA)
        arrived = time.time()
        message = _unstuff(bytes(buffer[start:body_end]))
        assert self._sender is not None
        arrival = Arrival(
            arrived,
            self._sender,
            tuple(self._recipients),
            _campaign(message),
            len(message),
            message if self._keep_data else None,
        )
        answer = self._responder.data(arrival)
        if answer.startswith(b"2"):
            self._on_arrival(arrival)
        out.append(answer)
        self._in_data = False
        self._reset()
        return next_start

    def _reset(self) -> None:
        self._sender = None
        self._recipients = []


async def serve(
    host: str,
    port: int,
    on_arrival: Callable[[Arrival], None],
    *,
    responder: Responder | None = None,
    keep_data: bool = False,
) -> asyncio.Server:
    """Listen on host:port; each accepted message goes to `on_arrival` (called on the loop)."""
    chosen = responder or AcceptAll()
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Session(chosen, on_arrival, keep_data), host, port)


def _free_port() -> int:
    # Imported here: the sink process itself never needs aiosmtpd and the web stack it brings.
    from devtools.smtp_sink import free_port

    return free_port()


@dataclass
class CountingSink:
    """Accepts every message on 127.0.0.1:`port`, from its own thread, and keeps the arrivals."""

    port: int = field(default_factory=_free_port)
    keep_data: bool = False
    responder: Responder = field(default_factory=AcceptAll)
    _arrivals: list[Arrival] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None

    def start(self) -> CountingSink:
        """Listen; returns once the port accepts connections."""
        ready = threading.Event()
        failure: list[BaseException] = []

        async def run() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            try:
                server = await serve(
                    "127.0.0.1", self.port, self._record, responder=self.responder, keep_data=self.keep_data
                )
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                ready.set()
            async with server:
                await self._stop.wait()

        self._thread = threading.Thread(target=asyncio.run, args=(run(),), name="counting-sink", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> CountingSink:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _record(self, arrival: Arrival) -> None:
        with self._lock:
            self._arrivals.append(arrival)

    def arrivals(self) -> list[Arrival]:
        """A copy of the arrivals, oldest first."""
        with self._lock:
            return list(self._arrivals)

    def count(self) -> int:
        """How many messages were accepted."""
        with self._lock:
            return len(self._arrivals)


class Report:
    """The JSON-lines report of a sink process, read incrementally as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._arrivals: list[Arrival] = []

    def arrivals(self) -> list[Arrival]:
        """Every arrival written so far (a line still being written waits for the next call)."""
        if self.path.exists():
            with self.path.open("rb") as report:
                report.seek(self._offset)
                chunk = report.read()
            complete = chunk.rfind(b"\n") + 1
            self._arrivals += [Arrival.from_json(line) for line in chunk[:complete].splitlines()]
            self._offset += complete
        return list(self._arrivals)

    def count(self) -> int:
        """How many messages were accepted so far."""
        return len(self.arrivals())


@dataclass
class SinkProcess:
    """`python -m devtools.counting_sink` as a child process, its report at `report`."""

    report: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    _report: Report | None = None

    def start(self, timeout: float = 15.0) -> SinkProcess:
        """Start it and return once it accepts connections; raise if it exits or times out."""
        command = [
            sys.executable,
            "-m",
            "devtools.counting_sink",
            "--port",
            str(self.port),
            "--report",
            str(self.report),
        ]
        self.process = subprocess.Popen(command)
        self._report = Report(self.report)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"counting sink exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"counting sink not listening on {self.port} after {timeout:.0f} s"
                    ) from None
                time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after `grace` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> SinkProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def arrivals(self) -> list[Arrival]:
        """Every arrival reported so far, oldest first."""
        assert self._report is not None, "start() first"
        return self._report.arrivals()

    def count(self) -> int:
        """How many messages were accepted so far."""
        return len(self.arrivals())


async def _run_process(host: str, port: int, report: IO[str]) -> None:
    def record(arrival: Arrival) -> None:
        # Line-buffered: each line reaches the file when it is written, so a reader sees it at once.
        report.write(arrival.to_json() + "\n")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with await serve(host, port, record):
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command line: count messages into a JSON-lines report until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="Lean SMTP sink recording arrivals as JSON lines.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--report", type=Path, required=True, help="file the arrivals are appended to")
    args = parser.parse_args(argv)
    with args.report.open("a", buffering=1, encoding="utf-8") as report:
        asyncio.run(_run_process(args.host, args.port, report))


if __name__ == "__main__":
    main()
