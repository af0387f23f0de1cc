"""Amazon SNS HTTP messages: their envelope, and the proof that our SNS topics sent them.

Following AWS's "Verifying the signatures of Amazon SNS messages" and what went wrong for peers
(Novu trusted any `s3.amazonaws.com` certificate; go.sns checked no host at all):

- every Notification, SubscriptionConfirmation and UnsubscribeConfirmation is verified before
  anything acts on it: SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA, over the
  `key\\nvalue\\n` string of the type's fields in AWS's fixed order;
- the signing certificate is fetched only from an https URL whose authority matches the SNS
  host pattern whole (so no user-info, no port) and whose path is SNS's `.pem`; it is cached by
  URL, so a burst of notifications costs one fetch;
- only configured topics are accepted, and a message older than the allowed age is a replay;
- a `SubscribeURL` is visited only once all of that holds and only on an SNS host (otherwise the
  endpoint would fetch any URL an attacker names: SSRF).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from shared.contracts import utc_now

_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _CONFIRMATION_FIELDS,
    "UnsubscribeConfirmation": _CONFIRMATION_FIELDS,
}
_OPTIONAL_FIELDS = {"Subject"}
_PROOF_FIELDS = ("Signature", "SignatureVersion", "SigningCertURL")
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_CERTIFICATE_PATH = re.compile(r"^/SimpleNotificationService(-[A-Za-z0-9]+)?\.pem$")
_CACHED_CERTIFICATES = 64

CertificateFetcher = Callable[[str], Awaitable[bytes]]
"""Fetch the PEM at an (already checked) certificate URL."""


class SnsError(Exception):
    """A message refused, with the HTTP status that says why and a reason for the log."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Malformed(SnsError):
    """Not an SNS message: bad JSON, a missing field or a wrong type (SNS does not retry a 400)."""


class Refused(SnsError):
    """Not proven to come from one of our topics: unsigned, forged, stale or foreign."""

    status = 403


class Unavailable(SnsError):
    """The proof could not be checked now (certificate or confirmation host away): SNS retries."""

    status = 503


@dataclass(frozen=True)
class SnsMessage:
    """An SNS message as posted to an HTTP endpoint: its type (Notification,
    SubscriptionConfirmation or UnsubscribeConfirmation), SNS's id of it (the same on every
    redelivery), its topic and time, and all its signed and proof fields by SNS's names."""

    type: str
    message_id: str
    topic_arn: str
    timestamp: datetime
    fields: dict[str, str]


def parse_timestamp(value: str) -> datetime:
    """An SNS/SES ISO 8601 timestamp, timezone-aware; Malformed if it is not one."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Malformed("timestamp is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise Malformed("timestamp has no timezone")
    return parsed


def parse_envelope(document: Any) -> SnsMessage:
    """The SNS message in a decoded JSON body; Malformed or Refused (unsigned) if it is not one."""
    if not isinstance(document, dict):
        raise Malformed("body is not a JSON object")
    kind = document.get("Type")
    if kind not in _SIGNED_FIELDS:
        raise Malformed("unknown or missing Type")
    names = (*_SIGNED_FIELDS[kind], *_PROOF_FIELDS)
    fields: dict[str, str] = {}
    for name in names:
        value = document.get(name)
        if value is None and name in _OPTIONAL_FIELDS:
            continue
        if value is None and name in _PROOF_FIELDS:
            raise Refused(f"unsigned: no {name}")
        if not isinstance(value, str):
            raise Malformed(f"{name} missing or not a string")
        fields[name] = value
    return SnsMessage(
        kind, fields["MessageId"], fields["TopicArn"], parse_timestamp(fields["Timestamp"]), fields
    )


def decode_body(body: bytes) -> Any:
    """The JSON document of a request body; Malformed if it is not JSON."""
    try:
        return json.loads(body)
    # RecursionError: a body of thousands of nested brackets, within the size limit.
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise Malformed("body is not JSON") from None


def string_to_sign(message: SnsMessage) -> bytes:
    """What SNS signed: `name\\nvalue\\n` for each of the type's fields present, in AWS's order."""
    names = _SIGNED_FIELDS[message.type]
    return "".join(f"{name}\n{message.fields[name]}\n" for name in names if name in message.fields).encode()


def _check_sns_url(url: str, host_pattern: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise Refused(f"{what} is not https")
    # urlsplit keeps user-info in netloc; matching the whole authority also refuses any port
    # the pattern does not name.
    if "@" in parts.netloc or not re.fullmatch(host_pattern, parts.netloc.lower()):
        raise Refused(f"{what} is not on an SNS host")


def check_certificate_url(url: str, host_pattern: str) -> None:
    """Refuse a signing certificate URL that is not SNS's own .pem over https."""
    _check_sns_url(url, host_pattern, "certificate URL")
    parts = urlsplit(url)
    if not _CERTIFICATE_PATH.match(parts.path) or parts.query or parts.fragment:
        raise Refused("certificate URL is not an SNS certificate path")


def check_subscribe_url(url: str, host_pattern: str) -> None:
    """Refuse a SubscribeURL that is not on an SNS host over https."""
    _check_sns_url(url, host_pattern, "SubscribeURL")


class CertificateCache:
    """Signing keys by certificate URL, fetched once each (SNS rotates certificates rarely)."""

    def __init__(self, fetch: CertificateFetcher) -> None:
        self._fetch = fetch
        self._keys: dict[str, rsa.RSAPublicKey] = {}

    async def public_key(self, url: str) -> rsa.RSAPublicKey:
        """The RSA key of the certificate at `url` (already checked)."""
        key = self._keys.get(url)
        if key is None:
            try:
                pem = await self._fetch(url)
            except Exception as exc:
                raise Unavailable(f"certificate not fetched: {type(exc).__name__}") from None
            try:
                certificate = x509.load_pem_x509_certificate(pem)
            except ValueError:
                raise Refused("certificate URL did not serve a PEM certificate") from None
            found = certificate.public_key()
            if not isinstance(found, rsa.RSAPublicKey):
                raise Refused("certificate key is not RSA")
            if len(self._keys) >= _CACHED_CERTIFICATES:
                self._keys.pop(next(iter(self._keys)))
            key = self._keys[url] = found
        return key


class SnsVerifier:
    """Accepts a message only from a configured topic, recent, and signed by SNS."""

    def __init__(
        self,
        *,
        topics: Collection[str],
        host_pattern: str,
        max_age: timedelta,
        certificates: CertificateCache,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._topics = topics
        self._host_pattern = host_pattern
        self._max_age = max_age
        self._certificates = certificates
        self._clock = clock

    async def verify(self, message: SnsMessage) -> None:
        """Return if the message is genuine, raise Refused (or Unavailable) otherwise."""
        # Cheap refusals first: a foreign topic or URL never makes us fetch anything.
        if message.topic_arn not in self._topics:
            raise Refused("unknown topic")
        url = message.fields["SigningCertURL"]
        check_certificate_url(url, self._host_pattern)
        digest = _HASHES.get(message.fields["SignatureVersion"])
        if digest is None:
            raise Refused("unknown SignatureVersion")
        if abs(self._clock() - message.timestamp) > self._max_age:
            raise Refused("stale timestamp")
        try:
            signature = base64.b64decode(message.fields["Signature"], validate=True)
        except binascii.Error:
            raise Refused("signature is not base64") from None
        key = await self._certificates.public_key(url)
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), digest())
        except InvalidSignature:
            raise Refused("bad signature") from None
        if message.type != "Notification":
            check_subscribe_url(message.fields["SubscribeURL"], self._host_pattern)
