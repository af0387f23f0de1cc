"""Secrets at rest (SMTP passwords, SES keys): Fernet with key rotation.

`SECRET_KEYS` lists Fernet keys newest first: the first encrypts, every key decrypts, so a new
key can be put in front and old tokens re-encrypted later. A token no key opens raises, loudly.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["InvalidToken", "SecretBox"]


class SecretBox:
    """Encrypts and decrypts short secrets with the configured keys."""

    def __init__(self, keys: str) -> None:
        fernets = [Fernet(key.strip().encode()) for key in keys.split(",") if key.strip()]
        if not fernets:
            raise ValueError("SECRET_KEYS holds no key")
        self._fernet = MultiFernet(fernets)

    def encrypt(self, plaintext: str) -> str:
        """The token to store in place of `plaintext`."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The plaintext of a stored token; raises InvalidToken if no configured key opens it."""
        return self._fernet.decrypt(token.encode()).decode()
