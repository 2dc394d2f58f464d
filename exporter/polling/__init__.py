"""Polling the Partner API: the call ledger and budgets, the schedule, sharding, the poller (the
async shell around them), the polled state and the collector that exposes it."""
