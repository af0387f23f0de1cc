"""Bounce's consumers: it learns of every sent message to trace feedback back to it."""

from __future__ import annotations

from faststream.rabbit import RabbitRouter

from services.bounce import repository as bounce_repo
from services.bounce import reputation_counts, ses_suppression
from shared.contracts import AddressSuppressed, AddressUnsuppressed, MessageSent, topology
from shared.service import HandlerRuntime, Runtime

router = RabbitRouter()


@router.subscriber(topology.BOUNCE_MESSAGE_SENT, topology.EVENTS)
async def record_sent(event: MessageSent, runtime: HandlerRuntime) -> None:
    """Remember which campaign, recipient and account a provider message id belongs to."""
    async with runtime.transaction() as conn:
        await bounce_repo.SentMessageRepository(conn).record(event)
        bucket = reputation_counts.bucket_of(reputation_counts.window_of(runtime.settings))
        await reputation_counts.count_sent(conn, event, bucket)


def _mirror(runtime: Runtime) -> ses_suppression.SuppressionMirror | None:
    mirror: ses_suppression.SuppressionMirror | None = runtime.state.get("ses_mirror")
    return mirror


@router.subscriber(topology.BOUNCE_ADDRESS_SUPPRESSED, topology.EVENTS)
async def mirror_suppression(event: AddressSuppressed, runtime: HandlerRuntime) -> None:
    """Copy a suppression into every SES account's own list (when the mirror is on)."""
    mirror = _mirror(runtime)
    if mirror is not None:
        reason = ses_suppression.ses_reason(event.reason)
        await ses_suppression.to_every_ses_account(runtime, lambda ses: mirror.put(ses, event.email, reason))


@router.subscriber(topology.BOUNCE_ADDRESS_UNSUPPRESSED, topology.EVENTS)
async def mirror_unsuppression(event: AddressUnsuppressed, runtime: HandlerRuntime) -> None:
    """Take an address an admin released off every SES account's own list (when the mirror is on)."""
    mirror = _mirror(runtime)
    if mirror is not None:
        await ses_suppression.to_every_ses_account(runtime, lambda ses: mirror.delete(ses, event.email))
