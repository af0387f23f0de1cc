"""Test sends ("Testar envio") in the sender: each step of the SMTP conversation is reported, a
refusal is the answer (with the server's reply), never an exception, and nothing is recorded."""

from __future__ import annotations

from typing import Any

from devtools.counting_sink import Arrival, serve
from devtools.fault_sink import FaultyResponder
from devtools.smtp_sink import free_port
from services.sender.test_send import _smtp
from shared.contracts import AccountConfigured, SenderIdentity, SmtpConnection, TestSendRequested
from shared.crypto import SecretBox
from shared.settings import DEV_SECRET_KEY


def _request(port: int, to: str) -> TestSendRequested:
    return TestSendRequested(
        account=AccountConfigured(
            account_id=1,
            name="Sink",
            transport="smtp",
            smtp=SmtpConnection(host="127.0.0.1", port=port, security="none"),
            rate_per_second=1,
            active=True,
        ),
        sender=SenderIdentity(name="Polo", email="avisos@polo.example"),
        to=to,
        subject="Teste",
        text="Teste de envio",
    )


async def _conversation(to: str, **faults: Any) -> tuple[Any, list[Arrival]]:
    arrivals: list[Arrival] = []
    port = free_port()
    server = await serve("127.0.0.1", port, arrivals.append, responder=FaultyResponder(**faults))
    try:
        outcome = await _smtp(_request(port, to), SecretBox(DEV_SECRET_KEY))
    finally:
        server.close()
        await server.wait_closed()
    return outcome, arrivals


async def test_a_delivered_test_reports_every_step() -> None:
    outcome, arrivals = await _conversation("ana@example.org")
    assert outcome.ok and outcome.provider_message_id
    steps = [step.split(":")[0] for step in outcome.transcript]
    assert steps == ["connect 127.0.0.1", "EHLO", "MAIL FROM", "RCPT TO", "DATA"]
    assert len(arrivals) == 1


async def test_a_refused_recipient_is_the_answer_with_the_servers_reply() -> None:
    outcome, arrivals = await _conversation(
        "nouser@example.org", refuse=lambda rcpt: rcpt.startswith("nouser")
    )
    assert not outcome.ok and outcome.error.startswith("RCPT TO refused: 550")
    assert outcome.transcript[-1].startswith("RCPT TO: 550")
    assert arrivals == []


async def test_an_unreachable_server_is_the_answer() -> None:
    outcome = await _smtp(_request(free_port(), "ana@example.org"), SecretBox(DEV_SECRET_KEY))
    assert not outcome.ok and outcome.error.startswith("connect failed")
