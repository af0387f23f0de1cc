"""Dead-lettered messages: list, show, replay or discard them, so a poison message is visible and
recoverable, never silently dropped.

    python -m devtools.dlq list                 # one line per message: id, original queue, reason
    python -m devtools.dlq show <id>            # headers and body of one message
    python -m devtools.dlq replay <id>|--all    # back to the queue it failed in, attempts reset
    python -m devtools.dlq discard <id>|--all   # remove for good (logged)

`<id>` is the message id (the event id) or the position shown by `list` (`#3`). The queue is
`topology.DEAD_LETTER_QUEUE` on `RABBITMQ_URL` (or `--url`). Messages are read with basic.get and
left unacknowledged while looked at, so they go back in place unless replayed or discarded; a
replay is confirmed by the broker before the dead-lettered copy is removed (a crash in between
leaves a duplicate, which consumers absorb, never a loss).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared.contracts import headers, topology
from shared.settings import ServiceSettings

log = logging.getLogger("dlq")

# Headers that describe the failure, not the message: dropped when it is replayed.
_FAILURE_HEADERS = (
    headers.FAILURE_REASON_HEADER,
    headers.ORIGINAL_QUEUE_HEADER,
    headers.FAILED_AT_HEADER,
    headers.ATTEMPT_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message as listed."""

    position: int
    message_id: str | None
    original_queue: str | None
    reason: str | None
    failed_at: str | None
    size: int

    def line(self) -> str:
        """One line of `list`."""
        return (
            f"#{self.position:<4} {self.message_id or '-':36}  {self.original_queue or '?':40}  "
            f"{self.failed_at or '-':32}  {self.reason or '-'}"
        )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _original_queue(message: AbstractIncomingMessage) -> str | None:
    """Where it failed: our header, or the broker's x-death (rejected by the queue itself)."""
    named = _text(message.headers.get(headers.ORIGINAL_QUEUE_HEADER))
    if named:
        return named
    deaths: Any = message.headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return _text(deaths[0].get("queue"))
    return None


def _reason(message: AbstractIncomingMessage) -> str | None:
    return _text(message.headers.get(headers.FAILURE_REASON_HEADER)) or _text(
        message.headers.get("x-first-death-reason")
    )


def describe(position: int, message: AbstractIncomingMessage) -> DeadLetter:
    """The listing of one fetched message."""
    return DeadLetter(
        position=position,
        message_id=message.message_id,
        original_queue=_original_queue(message),
        reason=_reason(message),
        failed_at=_text(message.headers.get(headers.FAILED_AT_HEADER)),
        size=len(message.body),
    )


class DeadLetters:
    """A look into the dead-letter queue through one connection (use `async with`)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._fetched: list[AbstractIncomingMessage] = []

    async def __aenter__(self) -> DeadLetters:
        self._connection = await aio_pika.connect(self._url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        return self

    async def __aexit__(self, *_: object) -> None:
        # Closing the channel returns every message fetched and not settled, in place.
        if self._connection is not None:
            await self._connection.close()

    async def fetch(self, limit: int = 10_000) -> list[AbstractIncomingMessage]:
        """Every message of the queue (up to `limit`), held unacknowledged."""
        assert self._channel is not None
        queue = await self._channel.get_queue(topology.DEAD_LETTER_QUEUE.name, ensure=True)
        while len(self._fetched) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            self._fetched.append(message)
        return list(self._fetched)

    def pick(self, messages: Sequence[AbstractIncomingMessage], key: str) -> AbstractIncomingMessage:
        """The message whose id is `key`, or at position `#n`; LookupError if none."""
        if key.startswith("#") and key[1:].isdigit():
            index = int(key[1:]) - 1
            if 0 <= index < len(messages):
                return messages[index]
        for message in messages:
            if message.message_id == key:
                return message
        raise LookupError(f"no dead-lettered message {key}")

    async def replay(self, message: AbstractIncomingMessage) -> str:
        """Publish it back to its original queue (confirmed), then remove it; the queue's name."""
        assert self._channel is not None
        queue = _original_queue(message)
        if not queue:
            raise LookupError(
                f"message {message.message_id} names no original queue; discard it or republish by hand"
            )
        kept = {k: v for k, v in message.headers.items() if k not in _FAILURE_HEADERS}
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                headers=kept,
                content_type=message.content_type,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                priority=message.priority,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue,
            mandatory=True,
        )
        await message.ack()
        log.warning("dead letter replayed", extra={"message_id": message.message_id, "queue": queue})
        return queue

    async def discard(self, message: AbstractIncomingMessage) -> None:
        """Remove it for good."""
        await message.ack()
        log.warning(
            "dead letter discarded", extra={"message_id": message.message_id, "reason": _reason(message)}
        )


def _show(message: AbstractIncomingMessage) -> str:
    headers_text = json.dumps({k: _text(v) if isinstance(v, bytes) else v for k, v in message.headers.items()},
                              default=str, indent=2)  # fmt: skip
    try:
        body = json.dumps(json.loads(message.body), indent=2, ensure_ascii=False)
    except ValueError:
        body = message.body.decode("utf-8", "replace")
    return (
        f"message id:     {message.message_id}\n"
        f"original queue: {_original_queue(message)}\n"
        f"reason:         {_reason(message)}\n"
        f"routing key:    {message.routing_key}\n"
        f"headers:        {headers_text}\n"
        f"body:\n{body}"
    )


async def command(url: str, action: str, key: str | None, everything: bool, out: Any = sys.stdout) -> int:
    """Run one action; the process exit code."""
    async with DeadLetters(url) as dead:
        messages = await dead.fetch()
        if action == "list":
            print(f"{len(messages)} dead-lettered message(s)", file=out)
            for position, message in enumerate(messages, 1):
                print(describe(position, message).line(), file=out)
            return 0
        chosen = messages if everything else [dead.pick(messages, key or "")]
        for message in chosen:
            if action == "show":
                print(_show(message), file=out)
            elif action == "replay":
                print(f"replayed {message.message_id} to {await dead.replay(message)}", file=out)
            elif action == "discard":
                await dead.discard(message)
                print(f"discarded {message.message_id}", file=out)
        return 0


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description="List, show, replay or discard dead-lettered messages.")
    parser.add_argument("--url", default=None, help="AMQP URL (default: RABBITMQ_URL)")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="one line per dead-lettered message")
    for name, text in (("show", "headers and body"), ("replay", "back to its queue"), ("discard", "remove")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("id", nargs="?", help="message id, or #position from `list`")
        if name != "show":
            sub.add_argument("--all", action="store_true", help="every dead-lettered message")
    args = parser.parse_args(argv)
    everything = bool(getattr(args, "all", False))
    if args.action != "list" and not everything and not args.id:
        parser.error(
            f"{args.action}: give a message id or #position" + ("" if args.action == "show" else ", or --all")
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    url = args.url or ServiceSettings().RABBITMQ_URL
    try:
        sys.exit(asyncio.run(command(url, args.action, args.id, everything)))
    except LookupError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
