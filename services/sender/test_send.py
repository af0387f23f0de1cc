"""Test sends ("Testar envio"): campaign asks over RabbitMQ request/reply; this sender opens its
own connection with the account's settings, sends one message and answers with each step of the
SMTP conversation (or SES's answer). Nothing is recorded: a test is no campaign delivery.

The handler never raises: a failure is the answer, not a message to retry.
"""

from __future__ import annotations

import email.utils
from email.message import EmailMessage

import aiosmtplib
from faststream.rabbit import RabbitRouter

from services.sender.transport import OutgoingMail, SendError, SesTransport
from shared.contracts import TestSendOutcome, TestSendRequested, topology
from shared.crypto import SecretBox
from shared.service import HandlerRuntime

router = RabbitRouter()

_TIMEOUT_SECONDS = 20.0


def _message(request: TestSendRequested) -> EmailMessage:
    message = EmailMessage()
    message["From"] = email.utils.formataddr((request.sender.name, str(request.sender.email)))
    message["To"] = str(request.to)
    message["Subject"] = request.subject
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain=str(request.sender.email).rsplit("@", 1)[-1])
    if request.sender.reply_to:
        message["Reply-To"] = str(request.sender.reply_to)
    message.set_content(request.text)
    return message


async def _smtp(request: TestSendRequested, secrets: SecretBox) -> TestSendOutcome:
    smtp = request.account.smtp
    assert smtp is not None
    password = secrets.decrypt(smtp.password_encrypted) if smtp.password_encrypted else None
    message = _message(request)
    transcript: list[str] = []
    client = aiosmtplib.SMTP(
        hostname=smtp.host,
        port=smtp.port,
        use_tls=smtp.security == "tls",
        start_tls=False,
        timeout=_TIMEOUT_SECONDS,
    )
    step = "connect"
    try:
        transcript.append(f"connect {smtp.host}:{smtp.port}: {(await client.connect()).code}")
        step = "EHLO"
        reply = await client.ehlo()
        transcript.append(f"EHLO: {reply.code}")
        if smtp.security == "starttls":
            step = "STARTTLS"
            reply = await client.starttls()
            transcript.append(f"STARTTLS: {reply.code} {reply.message}")
        if smtp.username:
            step = "AUTH"
            reply = await client.login(smtp.username, password or "")
            transcript.append(f"AUTH: {reply.code} {reply.message}")
        step = "MAIL FROM"
        reply = await client.mail(str(request.sender.email))
        transcript.append(f"MAIL FROM:<{request.sender.email}>: {reply.code} {reply.message}")
        step = "RCPT TO"
        reply = await client.rcpt(str(request.to))
        transcript.append(f"RCPT TO:<{request.to}>: {reply.code} {reply.message}")
        step = "DATA"
        reply = await client.data(message.as_bytes())
        transcript.append(f"DATA: {reply.code} {reply.message}")
    except aiosmtplib.SMTPResponseException as exc:
        transcript.append(f"{step}: {exc.code} {exc.message}")
        return TestSendOutcome(
            ok=False, error=f"{step} refused: {exc.code} {exc.message}", transcript=transcript
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        transcript.append(f"{step}: {type(exc).__name__}: {exc}")
        return TestSendOutcome(ok=False, error=f"{step} failed: {exc}", transcript=transcript)
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
    return TestSendOutcome(ok=True, provider_message_id=str(message["Message-ID"]), transcript=transcript)


async def _ses(request: TestSendRequested, secrets: SecretBox) -> TestSendOutcome:
    ses = request.account.ses
    assert ses is not None
    transport = SesTransport(ses, secrets.decrypt(ses.secret_access_key_encrypted))
    message = _message(request)
    try:
        message_id = await transport.send(
            OutgoingMail(
                envelope_from=str(request.sender.email),
                recipient=str(request.to),
                data=message.as_bytes(),
                message_id=str(message["Message-ID"]),
            )
        )
    except SendError as exc:
        return TestSendOutcome(
            ok=False, error=exc.reason, transcript=[f"SendRawEmail ({ses.region}): {exc.reason}"]
        )
    finally:
        await transport.close()
    return TestSendOutcome(
        ok=True,
        provider_message_id=message_id,
        transcript=[f"SendRawEmail ({ses.region}): MessageId {message_id}"],
    )


@router.subscriber(topology.SENDER_TEST_SEND)
async def send_test(request: TestSendRequested, runtime: HandlerRuntime) -> TestSendOutcome:
    """Send one test message with the account's settings and answer how it went."""
    secrets = SecretBox(runtime.settings.SECRET_KEYS)
    try:
        if request.account.smtp is not None:
            return await _smtp(request, secrets)
        if request.account.ses is not None:
            return await _ses(request, secrets)
        return TestSendOutcome(ok=False, error="the account has no transport settings")
    except Exception as exc:  # the answer, never a retry: a test is asked for by a waiting person
        return TestSendOutcome(ok=False, error=f"{type(exc).__name__}: {exc}")
