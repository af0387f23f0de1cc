"""Signed tokens for the links inside messages: open pixel, tracked clicks and unsubscribe.

A token carries its kind and values in clear, plus an HMAC-SHA256 over both: it cannot be
forged or altered, so the tracking service needs no database to trust it. Keys rotate: the
first of `TRACKING_SIGNING_KEYS` signs, every key verifies.

A click token carries the destination URL itself as its last value (the only value that may
contain ':'), so the MAC covers campaign, delivery and destination: a token can only ever
redirect where the message said, and tracking needs no table of links.

A recipient id of 0 means "anonymous" (tracking counted, nobody identified); unsubscribe
tokens always name the real recipient, since the law wants the unsubscribe honoured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

_SEPARATOR = ":"

# Token kinds. The unsubscribe kind is one letter because its token also goes into the local
# part of a mailto address, which RFC 5321 limits to 64 octets (see `TrackingLinks`).
OPEN = "open"
CLICK = "click"
UNSUBSCRIBE = "u"

# Recipient id carried by links of a campaign whose tracking is anonymous.
ANONYMOUS = 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# `base64.urlsafe_b64decode` in one C call: its Python wrappers (type checks, a second
# translation of the input, padding by string concatenation) cost three times the decoding.
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# Indexed by the unpadded length modulo 4.
_PADDING = (b"", b"===", b"==", b"=")


def _unb64(data: bytes) -> bytes:
    return binascii.a2b_base64(data.translate(_URLSAFE_TO_STANDARD) + _PADDING[len(data) % 4])


def _id(value: str) -> int | None:
    # isascii too: str.isdigit accepts digits such as "²" that int() refuses.
    return int(value) if value.isascii() and value.isdigit() else None


class LinkSigner:
    """Signs and verifies link tokens."""

    def __init__(self, keys: str) -> None:
        secrets = [key.strip().encode() for key in keys.split(",") if key.strip()]
        if not secrets:
            raise ValueError("TRACKING_SIGNING_KEYS holds no key")
        # Keyed HMAC states, copied per token: a message signs several links, and copying a
        # prepared state is about twice as fast as keying a new HMAC each time.
        self._macs = [hmac.new(secret, digestmod=hashlib.sha256) for secret in secrets]

    def _mac(self, index: int, payload: bytes) -> bytes:
        mac = self._macs[index].copy()
        mac.update(payload)
        return mac.digest()[:16]

    def sign(self, kind: str, *values: int | str) -> str:
        """A token for `kind` carrying `values` (only the last may contain ':')."""
        payload = _SEPARATOR.join([kind, *map(str, values)]).encode()
        return f"{_b64(payload)}.{_b64(self._mac(0, payload))}"

    def verify(self, kind: str, token: str, maxsplit: int = -1) -> list[str] | None:
        """The values of a genuine token of this kind; None for anything forged or malformed.

        `maxsplit` keeps ':' inside the last value (see `verify_click`)."""
        try:
            # A token is ASCII: anything else fails here, before any decoding.
            payload_text, mac_text = token.encode("ascii").split(b".", 1)
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except ValueError:  # also UnicodeEncodeError and binascii.Error
            return None
        for index in range(len(self._macs)):
            if hmac.compare_digest(mac, self._mac(index, payload)):
                break
        else:
            return None
        token_kind, *values = payload.decode(errors="replace").split(_SEPARATOR, maxsplit)
        return values if token_kind == kind else None

    def verify_delivery(self, kind: str, token: str) -> tuple[int, int] | None:
        """(campaign id, recipient id) of a genuine open or unsubscribe token, else None."""
        values = self.verify(kind, token)
        if values is None or len(values) != 2:
            return None
        campaign_id, recipient_id = _id(values[0]), _id(values[1])
        if campaign_id is None or recipient_id is None:
            return None
        return campaign_id, recipient_id

    def verify_click(self, token: str) -> tuple[int, int, str] | None:
        """(campaign id, recipient id, destination URL) of a genuine click token, else None."""
        # Kind, campaign, recipient, then the URL whole: the URL's own ':' are no separators.
        values = self.verify(CLICK, token, maxsplit=3)
        if values is None or len(values) != 3:
            return None
        campaign_text, recipient_text, url = values
        campaign_id, recipient_id = _id(campaign_text), _id(recipient_text)
        # Only web addresses, and none with a space or control character a Location header
        # could carry into something else (we signed none such, this guards a leaked old key).
        web = url.startswith(("https://", "http://")) and url.isprintable() and " " not in url
        if campaign_id is None or recipient_id is None or not web:
            return None
        return campaign_id, recipient_id, url


class TrackingLinks:
    """The tracking service's links for one delivery, as they appear inside a message.

    Paths: `/o/<token>.gif` open pixel, `/c/<token>` click redirect, `/u/<token>` unsubscribe
    (GET: the page; POST `List-Unsubscribe=One-Click`: RFC 8058 one-click, the URL that
    `List-Unsubscribe` names). Mail to `unsubscribe+<token>@<domain>` unsubscribes too.
    """

    def __init__(self, base_url: str, signer: LinkSigner, mailto_domain: str | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._signer = signer
        self._mailto_domain = mailto_domain

    def open_pixel(self, campaign_id: int, recipient_id: int) -> str:
        """URL of the open pixel of one delivery."""
        return f"{self._base_url}/o/{self._signer.sign(OPEN, campaign_id, recipient_id)}.gif"

    def click(self, campaign_id: int, recipient_id: int, url: str) -> str:
        """URL that records a click of one delivery, then redirects to `url`."""
        return f"{self._base_url}/c/{self._signer.sign(CLICK, campaign_id, recipient_id, url)}"

    def unsubscribe(self, campaign_id: int, recipient_id: int) -> str:
        """URL of the unsubscribe page of one delivery; also its RFC 8058 one-click POST URL."""
        return f"{self._base_url}/u/{self._signer.sign(UNSUBSCRIBE, campaign_id, recipient_id)}"

    def unsubscribe_mailto(self, campaign_id: int, recipient_id: int, sender_domain: str) -> str:
        """mailto: URL that unsubscribes one delivery (the configured domain, else the sender's).

        The local part `unsubscribe+<token>` stays within 64 octets for campaign ids below
        10^10 and recipient ids below 10^8.
        """
        token = self._signer.sign(UNSUBSCRIBE, campaign_id, recipient_id)
        return f"mailto:unsubscribe+{token}@{self._mailto_domain or sender_domain}"
