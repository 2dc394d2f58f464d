"""Polling the Partner API: the call ledger and budgets, the schedule, sharding, the task kinds,
what a call charges, idle tracking, backoff, the poller (the async shell around them), the
polled state and the collector that exposes it."""
