"""Bounded label values. Anything outside these sets is reported as `other`, so a surprise from
the API or a webhook can never mint series without limit."""

from __future__ import annotations

CATEGORIES = frozenset({
    "marketing", "marketing_lite", "utility", "authentication", "authentication_international",
    "service", "referral_conversion",
})
PRICING_TYPES = frozenset({"regular", "free_customer_service", "free_entry_point"})
DIRECTIONS = frozenset({"business_initiated", "user_initiated"})
OTHER = "other"


def bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER
