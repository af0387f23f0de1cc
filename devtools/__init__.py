"""Development tools: the local SMTP sink and the launcher of the whole stack (`make run`, tests)."""
