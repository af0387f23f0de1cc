"""Send requests over RabbitMQ: `send.requested` on `mailer.events` becomes an API send, exactly
as `POST /public/v1/sends` would make it, and is answered by `send.accepted` or `send.rejected`
(on `mailer.events`, carrying the request's system and idempotency key).

The body is read as a plain object first, so that a request that breaks the contract is answered
with `send.rejected` and its reasons rather than only dead-lettered; one without `system` and
`idempotency_key` cannot be answered and is dead-lettered. A dependency that is away (audience,
SES) retries the message later.
"""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitRouter
from pydantic import ValidationError

from services.campaign import api_repository as api_repo
from services.campaign import sends
from shared import outbox
from shared.contracts import SendRejected, SendRequested, topology
from shared.errors import PermanentFailure, RetryLater
from shared.service import HandlerRuntime, Runtime

router = RabbitRouter()


def _reasons(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()[:10]
    )


async def _reject(runtime: Runtime, system: str, key: str, code: str, reason: str) -> None:
    async with runtime.transaction() as conn:
        await outbox.add_event(
            conn, SendRejected(system=system, idempotency_key=key, code=code, reason=reason)
        )


@router.subscriber(
    topology.CAMPAIGN_SEND_REQUESTED,
    topology.EVENTS,
    title="campaign.send.requested",
    description="Another system's send request; answered by send.accepted or send.rejected.",
)
async def accept_send(request: SendRequested | dict[str, Any], runtime: HandlerRuntime) -> None:
    """Create the API send the request asks for, or say why not."""
    body = request.model_dump(mode="json") if isinstance(request, SendRequested) else request
    system, key = body.get("system"), body.get("idempotency_key")
    if not (isinstance(system, str) and system and isinstance(key, str) and key):
        raise PermanentFailure("send.requested without 'system' and 'idempotency_key' cannot be answered")
    system, key = system[:100], key[:200]
    try:
        event = request if isinstance(request, SendRequested) else SendRequested.model_validate(body)
    except ValidationError as exc:
        await _reject(runtime, system, key, "invalid", _reasons(exc))
        return
    async with runtime.pool.acquire() as conn:
        keys = api_repo.ApiKeyRepository(conn)
        known, allowed = await keys.system_known(system), await keys.system_senders(system)
    if not known:
        await _reject(
            runtime, system, key, "unknown_system", f"{system!r} is no calling system with an active API key"
        )
        return
    caller = sends.Caller(system=system, allowed_senders=frozenset(allowed), channel="amqp")
    try:
        await sends.create(runtime, event, key, caller, accepted_event=True)
    except sends.SendProblem as exc:
        if exc.status >= 500:
            raise RetryLater(exc.reason) from exc
        await _reject(runtime, system, key, exc.code, exc.reason)
