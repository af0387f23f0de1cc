"""The end-to-end stack fixture, for the graceful-shutdown test."""

from __future__ import annotations

from tests.e2e.conftest import stack

__all__ = ["stack"]
