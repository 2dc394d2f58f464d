"""Webhook ingestion: receiver (HTTP, auth, durable inbox) -> parser -> state (exactly-once)."""
