"""Signed tokens for the links inside messages (open pixel today; clicks and unsubscribe next).

A token carries its kind and values in clear, plus an HMAC-SHA256 over both: it cannot be
forged or altered, so the tracking service needs no database to trust it. Keys rotate: the
first of `TRACKING_SIGNING_KEYS` signs, every key verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

_SEPARATOR = ":"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and verifies link tokens."""

    def __init__(self, keys: str) -> None:
        self._keys = [key.strip().encode() for key in keys.split(",") if key.strip()]
        if not self._keys:
            raise ValueError("TRACKING_SIGNING_KEYS holds no key")

    @staticmethod
    def _mac(key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()[:16]

    def sign(self, kind: str, *values: int | str) -> str:
        """A token for `kind` carrying `values` (which must not contain ':')."""
        payload = _SEPARATOR.join([kind, *map(str, values)]).encode()
        return f"{_b64(payload)}.{_b64(self._mac(self._keys[0], payload))}"

    def verify(self, kind: str, token: str) -> list[str] | None:
        """The values of a genuine token of this kind; None for anything forged or malformed."""
        try:
            payload_text, mac_text = token.split(".", 1)
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except ValueError:
            return None
        if not any(hmac.compare_digest(mac, self._mac(key, payload)) for key in self._keys):
            return None
        token_kind, *values = payload.decode(errors="replace").split(_SEPARATOR)
        return values if token_kind == kind else None


class TrackingLinks:
    """The tracking service's links for one delivery, as they appear inside a message."""

    def __init__(self, base_url: str, signer: LinkSigner) -> None:
        self._base_url = base_url.rstrip("/")
        self._signer = signer

    def open_pixel(self, campaign_id: int, recipient_id: int) -> str:
        """URL of the open pixel of one delivery."""
        return f"{self._base_url}/o/{self._signer.sign('open', campaign_id, recipient_id)}.gif"
