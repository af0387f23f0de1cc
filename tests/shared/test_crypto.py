"""Secrets at rest: encrypted, readable with any configured key, unreadable without one."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from shared.crypto import InvalidToken, SecretBox


class TestSecretBox:
    def test_round_trip_without_the_plaintext_in_the_token(self) -> None:
        box = SecretBox(Fernet.generate_key().decode())
        token = box.encrypt("s3nh4-secreta")
        assert "s3nh4" not in token
        assert box.decrypt(token) == "s3nh4-secreta"

    def test_a_new_key_in_front_still_reads_old_tokens(self) -> None:
        old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
        token = SecretBox(old).encrypt("x")
        assert SecretBox(f"{new},{old}").decrypt(token) == "x"

    def test_a_token_no_key_opens_fails_loudly(self) -> None:
        token = SecretBox(Fernet.generate_key().decode()).encrypt("x")
        with pytest.raises(InvalidToken):
            SecretBox(Fernet.generate_key().decode()).decrypt(token)

    def test_needs_a_key(self) -> None:
        with pytest.raises(ValueError, match="no key"):
            SecretBox("")
