"""API keys of calling systems and their rate limit.

A token is 32 random bytes (URL-safe base64) behind a short public prefix: `mlr_<prefix>_<secret>`.
It is shown once, when created; only its SHA-256 is stored. A slow password hash buys nothing for
a 256-bit random secret, and the lookup stays one index probe.

The rate limit is a token bucket per key, `rate_per_minute` deep and refilled continuously, kept
in each campaign replica's memory: with N replicas behind a balancer a key gets up to N times
its rate. That bounds a runaway client without a database write per request; a shared limit
would need a shared store (PostgreSQL or Redis) on the hot path.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

TOKEN_PREFIX = "mlr_"


def new_token() -> tuple[str, str]:
    """A new token and its public prefix (which listings show to tell keys apart)."""
    prefix = secrets.token_hex(4)
    return f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def digest(token: str) -> bytes:
    """What is stored of a token."""
    return hashlib.sha256(token.encode()).digest()


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """Token buckets per key id; `clock` is monotonic seconds (a fake in tests)."""

    clock: Callable[[], float] = time.monotonic
    _buckets: dict[int, _Bucket] = field(default_factory=dict)

    def acquire(self, key_id: int, per_minute: int) -> float:
        """Take one request from the key's bucket: 0 when allowed, else the seconds to wait."""
        now = self.clock()
        per_second = per_minute / 60
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(tokens=float(per_minute), updated=now)
        bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.updated) * per_second)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / per_second


def retry_after(wait: float) -> str:
    """The Retry-After header value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(wait)))
