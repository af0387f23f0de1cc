"""Unsubscribes: what a recipient may ask, and how it travels until every service honours it.

The flow, and why:

1. The link `/u/<token>` names (campaign, recipient) and is HMAC-signed, so tracking trusts it
   without a database; it never carries the address (links stay short and leak no e-mail).
   A GET only shows the page (link scanners fetch every link; a GET must change nothing); the
   page's form, or the RFC 8058 one-click POST a mail provider sends (`List-Unsubscribe=One-Click`,
   always "all future campaigns"), asks for it.
2. Before answering, tracking keeps the request in its own `unsubscribes` table and, in the same
   transaction, queues `UnsubscribeRequested` in its outbox: an accepted unsubscribe survives a
   broker outage (the relay publishes it when RabbitMQ is back) and a crash. Asking again for the
   same scope keeps the first request and publishes nothing new.
3. campaign consumes `unsubscribe.requested`: it owns the results, the only place that knows the
   recipient's address for (campaign, recipient). It stamps the result (`unsubscribed_campaign_at`
   or `unsubscribed_all_at`, with the reason) and, in that transaction, queues
   `RecipientUnsubscribed` with the e-mail through its outbox, once per scope.
4. audience and sender consume `recipient.unsubscribed` and keep their copies of the global
   unsubscribes by e-mail, so a later campaign leaves the address out.

A distinct event rather than a `recipient.unsubscribed` without an e-mail: one routing key keeps
one meaning, and consumers that key on the address never see a half-filled event.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.contracts import UnsubscribeRequested

Scope = Literal["campaign", "all"]
Method = Literal["page", "one_click"]

SCOPES: tuple[Scope, ...] = ("campaign", "all")
# A reason is a sentence or two; the field is free text from the public internet.
MAX_REASON_LENGTH = 500
# RFC 8058: the one-click POST body carries exactly this field and value.
ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"


@dataclass(frozen=True)
class Unsubscribe:
    """One recipient's request to leave one campaign or every future one."""

    campaign_id: int
    recipient_id: int
    scope: Scope
    reason: str
    method: Method
    requested_at: datetime

    def requested(self) -> UnsubscribeRequested:
        """The event that asks campaign to record it and tell everyone."""
        return UnsubscribeRequested(
            campaign_id=self.campaign_id,
            recipient_id=self.recipient_id,
            scope=self.scope,
            reason=self.reason,
            requested_at=self.requested_at,
        )


def is_one_click(form: Mapping[str, str]) -> bool:
    """Whether a POST body is an RFC 8058 one-click unsubscribe."""
    return form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE


def chosen_scope(form: Mapping[str, str]) -> Scope | None:
    """The scope the page's form chose; None if none (or an unknown one) was."""
    scope = form.get("scope")
    return scope if scope in SCOPES else None


def clean_reason(text: str) -> str:
    """The reason as kept: control characters out (line breaks become spaces), trimmed, bounded."""
    printable = "".join(
        " " if unicodedata.category(char).startswith("C") else char for char in text[: MAX_REASON_LENGTH * 2]
    )
    return " ".join(printable.split())[:MAX_REASON_LENGTH]
