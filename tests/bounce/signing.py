"""A stand-in for SNS's certificate host: a locally made certificate, served over https from
localhost, whose key signs test messages exactly as SNS signs real ones.

The service is pointed at it by the test-only SNS_CERT_HOST_PATTERN and an HTTP client that
trusts this certificate; nothing else about verification is relaxed.
"""

from __future__ import annotations

import base64
import ipaddress
import ssl
import tempfile
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from services.bounce.sns import SnsMessage, parse_envelope, string_to_sign

CERT_PATH = "/SimpleNotificationService-0123456789abcdef.pem"
CONFIRM_PATH = "/confirm"
HOST_PATTERN = r"^localhost:\d+$"


def make_certificate() -> tuple[rsa.RSAPrivateKey, bytes]:
    """A key and its self-signed certificate for localhost (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


class SnsHost:
    """An https server on localhost serving the signing certificate and the SubscribeURL; it
    counts the requests each path got."""

    def __init__(self) -> None:
        self.key, self.pem = make_certificate()
        self.requests: Counter[str] = Counter()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests[self.path] += 1
                is_certificate = self.path.startswith("/SimpleNotificationService")
                body = host.pem if is_certificate else b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.NamedTemporaryFile() as cert, tempfile.NamedTemporaryFile() as key_file:
            cert.write(self.pem)
            cert.flush()
            key_file.write(
                self.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            key_file.flush()
            context.load_cert_chain(cert.name, key_file.name)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.base_url = f"https://localhost:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> SnsHost:
        """Serve in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def client_context(self) -> ssl.SSLContext:
        """A TLS context trusting this host's certificate only."""
        return ssl.create_default_context(cadata=self.pem.decode())

    @property
    def cert_url(self) -> str:
        """The SigningCertURL of messages signed here."""
        return self.base_url + CERT_PATH

    def sign(self, fields: dict[str, str], version: str = "2", cert_url: str | None = None) -> dict[str, str]:
        """The SNS message with these fields, signed with this host's key as SNS would."""
        unsigned = fields | {
            "SignatureVersion": version,
            "SigningCertURL": cert_url or self.cert_url,
            "Signature": "",
        }
        message: SnsMessage = parse_envelope(unsigned)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(string_to_sign(message), padding.PKCS1v15(), digest)
        return unsigned | {"Signature": base64.b64encode(signature).decode()}
