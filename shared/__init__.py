"""Code every Mailer service has in common: contracts, broker, database, telemetry."""
