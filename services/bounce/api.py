"""Bounce's HTTP: the SNS endpoints SES feedback arrives on, and the admin API of the shared
suppression list (behind the console, which checks the admin role). Texts meant for admins
(`detail`) are in Portuguese.

`POST /sns` takes signed SNS messages. `POST /sns/raw` takes raw message delivery (the SES
notification with no SNS envelope, so no signature): it is open only when
SNS_RAW_DELIVERY_SECRET is set, and each request must carry that secret as its Basic-auth
password (SNS sends the credentials of the endpoint URL, `https://sns:<secret>@host/sns/raw`)
and a configured topic in `x-amz-sns-topic-arn`. Every refusal is a 4xx and a log line naming
the reason, never the body (it holds addresses).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from datetime import timedelta
from typing import Annotated

import httpx
from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.bounce import ingest as feedback_ingest
from services.bounce import notifications, sns, suppression
from services.bounce import repository as bounce_repo
from services.bounce.settings import BounceSettings
from services.bounce.sns_client import SnsHttpClient
from shared import outbox
from shared.contracts import AddressUnsuppressed
from shared.service import Runtime, RuntimeDep

log = logging.getLogger(__name__)

router = APIRouter()


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    # Read as a stream so an oversized body is refused without holding it all.
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return body


def _settings(runtime: Runtime) -> BounceSettings:
    settings = runtime.settings
    assert isinstance(settings, BounceSettings)
    return settings


def _refused(error: sns.SnsError, topic: str | None, message_id: str | None) -> JSONResponse:
    log.warning(
        "sns message refused",
        extra={
            "status": error.status,
            "reason": error.reason,
            "topic_arn": topic,
            "sns_message_id": message_id,
        },
    )
    return JSONResponse({"detail": error.reason}, status_code=error.status)


def _too_large() -> JSONResponse:
    log.warning("sns message refused", extra={"status": 413, "reason": "body too large"})
    return JSONResponse({"detail": "corpo da requisição grande demais"}, status_code=413)


@router.post("/sns", include_in_schema=False)
async def receive_sns(request: Request, runtime: RuntimeDep) -> Response:
    """An SNS HTTP(S) message: verified, then a notification is recorded and acted on, a
    subscription to a configured topic confirmed."""
    settings = _settings(runtime)
    message: sns.SnsMessage | None = None
    try:
        body = await _body(request, settings.SNS_MAX_BODY_BYTES)
    except _TooLarge:
        return _too_large()
    try:
        message = sns.parse_envelope(sns.decode_body(body))
        verifier: sns.SnsVerifier = runtime.state["sns_verifier"]
        await verifier.verify(message)
        if message.type == "SubscriptionConfirmation":
            await _confirm(runtime, message)
        elif message.type == "Notification":
            payload = message.fields["Message"]
            feedback = notifications.parse_notification(payload)
            source = feedback_ingest.Source(
                message.message_id, message.topic_arn, settings.SNS_TOPIC_ACCOUNTS[message.topic_arn]
            )
            await _receive(runtime, source, feedback, payload)
        else:
            log.info("sns unsubscribe confirmed", extra={"topic_arn": message.topic_arn})
    except sns.SnsError as error:
        return _refused(
            error, message.topic_arn if message else None, message.message_id if message else None
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _receive(
    runtime: Runtime, source: feedback_ingest.Source, feedback: notifications.Feedback, payload: str
) -> None:
    # Whatever goes wrong while storing (database away, a bug), SNS must retry: a 503, not a
    # 500 (and nothing was committed).
    try:
        await feedback_ingest.receive(runtime, source, feedback, payload)
    except Exception as exc:
        log.exception("feedback not stored", extra={"sns_message_id": source.message_id})
        raise sns.Unavailable(f"feedback not stored: {type(exc).__name__}") from None


async def _confirm(runtime: Runtime, message: sns.SnsMessage) -> None:
    client: SnsHttpClient = runtime.state["sns_http"]
    try:
        await client.confirm_subscription(message.fields["SubscribeURL"])
    except Exception as exc:
        raise sns.Unavailable(f"subscription not confirmed: {type(exc).__name__}") from None
    log.info("sns subscription confirmed", extra={"topic_arn": message.topic_arn})


def _password(authorization: str | None) -> str | None:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        _, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password


@router.post("/sns/raw", include_in_schema=False)
async def receive_raw(
    request: Request,
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header()] = None,
    topic_arn: Annotated[str | None, Header(alias="x-amz-sns-topic-arn")] = None,
    message_id: Annotated[str | None, Header(alias="x-amz-sns-message-id")] = None,
) -> Response:
    """An SES notification by SNS raw message delivery, proven by the shared secret."""
    settings = _settings(runtime)
    secret = settings.SNS_RAW_DELIVERY_SECRET
    password = _password(authorization)
    if secret is None or password is None or not hmac.compare_digest(password, secret.get_secret_value()):
        return _refused(sns.Refused("raw delivery without the shared secret"), topic_arn, message_id)
    if topic_arn is None or topic_arn not in settings.SNS_TOPIC_ACCOUNTS:
        return _refused(sns.Refused("unknown topic"), topic_arn, message_id)
    if not message_id:
        return _refused(sns.Malformed("x-amz-sns-message-id missing"), topic_arn, message_id)
    try:
        body = await _body(request, settings.SNS_MAX_BODY_BYTES)
    except _TooLarge:
        return _too_large()
    try:
        payload = body.decode()
        feedback = notifications.parse_notification(payload)
        source = feedback_ingest.Source(message_id, topic_arn, settings.SNS_TOPIC_ACCOUNTS[topic_arn])
        await _receive(runtime, source, feedback, payload)
    except UnicodeDecodeError:
        return _refused(sns.Malformed("body is not UTF-8"), topic_arn, message_id)
    except sns.SnsError as error:
        return _refused(error, topic_arn, message_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class SuppressionPage(BaseModel):
    """A page of the list; `next` is the `before` of the following page (None: the last)."""

    items: list[bounce_repo.Suppression]
    next: int | None


_NO_CURSOR = 2**63 - 1


@router.get("/api/v1/suppressions", response_model=SuppressionPage)
async def list_suppressions(
    runtime: RuntimeDep,
    email: Annotated[str | None, Query(max_length=320)] = None,
    reason: Annotated[str | None, Query(pattern="^(bounce|complaint|soft_bounce|manual)$")] = None,
    before: Annotated[int, Query(ge=1, le=_NO_CURSOR)] = _NO_CURSOR,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SuppressionPage:
    """The shared suppression list ("Subscrições bounce"), newest first, by keyset pages."""
    async with runtime.pool.acquire() as conn:
        entries = await bounce_repo.SuppressionRepository(conn).page(
            email=suppression.normalise(email) if email else None, reason=reason, before=before, limit=limit
        )
    return SuppressionPage(items=entries, next=entries[-1].suppression_id if len(entries) == limit else None)


@router.get("/api/v1/feedback/unmatched")
async def unmatched_feedback(runtime: RuntimeDep) -> dict[int, int]:
    """Feedback about messages that are not ours (another system sending through the same
    account, as the provider's manual warns), counted per account id."""
    async with runtime.pool.acquire() as conn:
        return await bounce_repo.FeedbackRepository(conn).unmatched_by_account()


@router.delete("/api/v1/suppressions/{email}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_suppression(runtime: RuntimeDep, email: Annotated[str, Path(max_length=320)]) -> None:
    """Take an address off the list; audience and sender hear of it through address.unsuppressed."""
    address = suppression.normalise(email)
    async with runtime.transaction() as conn:
        await bounce_repo.SuppressionRepository(conn).remove(address)
        await outbox.add_event(conn, AddressUnsuppressed(email=address))
    log.info("address unsuppressed by an admin")


def sns_state(settings: BounceSettings, client: httpx.AsyncClient) -> dict[str, object]:
    """What the SNS endpoints find in the runtime's state: the verifier (with its certificate
    cache, kept for the life of the service) and the client that visits SNS hosts."""
    http = SnsHttpClient(client)
    verifier = sns.SnsVerifier(
        topics=settings.SNS_TOPIC_ACCOUNTS.keys(),
        host_pattern=settings.SNS_CERT_HOST_PATTERN,
        max_age=timedelta(seconds=settings.SNS_MAX_AGE_SECONDS),
        certificates=sns.CertificateCache(http.fetch_certificate),
    )
    return {"sns_verifier": verifier, "sns_http": http}
