"""The campaign service."""
