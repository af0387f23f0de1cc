"""A counting SMTP sink that misbehaves on request, as providers do: answers 454 throttling for a
while, drops connections, and refuses some recipients with 5xx for good.

`FaultyResponder` plugs into `devtools.counting_sink` (the protocol asks it for every reply); a
test switches its faults on and off from its own thread while the sink serves from another:

    responder = FaultyResponder(refuse=lambda rcpt: rcpt.startswith("nouser"))
    with CountingSink(responder=responder) as sink:
        responder.throttle_for(10)      # 454 to every MAIL for 10 s
        responder.drop_for(10, 0.2)     # hang up on 20 % of MAIL commands for 10 s

Throttles and drops happen at MAIL, before the message is handed over, so the sender can safely
send again; a refused recipient gets `550 5.1.1` at RCPT, every time.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from devtools.counting_sink import DROP, Arrival, Reply, reply

THROTTLED = reply(454, "4.7.0 Throttling failure: Maximum sending rate exceeded")
USER_UNKNOWN = reply(550, "5.1.1 Recipient address rejected: user unknown")
_OK = reply(250, "OK")
_QUEUED = reply(250, "2.0.0 Message accepted")


def _never(_: str) -> bool:
    return False


@dataclass
class FaultyResponder:
    """Replies of a sink with faults switched on for a while; counts what it did."""

    refuse: Callable[[str], bool] = _never
    seed: int = 0
    _throttle_until: float = 0.0
    _drop_until: float = 0.0
    _drop_share: float = 0.0
    _random: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    faults: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def throttle_for(self, seconds: float) -> None:
        """Answer 454 throttling to every MAIL for `seconds` from now."""
        self._throttle_until = time.monotonic() + seconds

    def drop_for(self, seconds: float, share: float) -> None:
        """Hang up on `share` (0..1) of the MAIL commands for `seconds` from now."""
        self._drop_share = share
        self._drop_until = time.monotonic() + seconds

    def mail(self, sender: str) -> Reply:
        now = time.monotonic()
        with self._lock:
            if now < self._throttle_until:
                self.faults["throttled"] += 1
                return THROTTLED
            if now < self._drop_until and self._random.random() < self._drop_share:
                self.faults["dropped"] += 1
                return DROP
        return _OK

    def rcpt(self, sender: str, recipient: str) -> Reply:
        if self.refuse(recipient):
            with self._lock:
                self.faults["refused"] += 1
            return USER_UNKNOWN
        return _OK

    def data(self, arrival: Arrival) -> Reply:
        return _QUEUED
