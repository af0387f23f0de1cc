"""The sender's own Prometheus metrics, on the service's registry (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

from shared.service import Runtime

_KEY = "outcome_counter"


def count_outcome(runtime: Runtime, account_id: int, status: str) -> None:
    """One delivery reached `status` (sent, failed, skipped, indeterminate) on the account."""
    counter: Counter | None = runtime.state.get(_KEY)
    if counter is None:
        counter = runtime.state[_KEY] = Counter(
            "mailer_sender_messages",
            "Deliveries by outcome, per sending account",
            ["account_id", "outcome"],
            registry=runtime.registry,
        )
    counter.labels(str(account_id), status).inc()
