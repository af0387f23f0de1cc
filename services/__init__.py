"""The five Mailer services. Each imports only `shared`, never another service."""
