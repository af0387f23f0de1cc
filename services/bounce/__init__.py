"""The bounce service."""
