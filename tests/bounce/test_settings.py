"""Bounce's settings refuse what would break the service."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.bounce.settings import BounceSettings


class TestBounceSettings:
    def test_a_pool_of_one_connection_is_refused_since_the_brake_would_wait_for_itself(self) -> None:
        with pytest.raises(ValidationError, match="DATABASE_POOL_SIZE"):
            BounceSettings(DATABASE_POOL_SIZE=1)

    def test_two_connections_are_enough(self) -> None:
        assert BounceSettings(DATABASE_POOL_SIZE=2).DATABASE_POOL_SIZE == 2
