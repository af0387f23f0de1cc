"""Exceptions with a meaning across services: what handlers raise to say how a message failed,
and what repositories raise for the API to answer 404 or 409."""

from __future__ import annotations


class PermanentFailure(Exception):
    """This message can never succeed: dead-letter it now with this reason, do not retry."""


class RetryLater(Exception):
    """This message cannot be handled yet (a dependency is missing or away): retry it later."""


class NotFound(Exception):
    """A required row does not exist (the API answers 404)."""


class Conflict(Exception):
    """The request conflicts with the current state, e.g. an illegal status change (409)."""
