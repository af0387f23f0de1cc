"""The audience service."""
