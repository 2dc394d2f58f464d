"""Bounded label values. Anything outside these sets is reported as `other`, so a surprise from
the API or a webhook can never mint series without limit.

Categories are Meta's pricing categories, lower case. The group ones are messages to WhatsApp
groups (Meta's webhooks reference, groups); a category Meta adds later, such as the one for
Meta Business Agent messages (charged per token since 2026-08-01), is `other` until added here.
"""

from __future__ import annotations

CATEGORIES = frozenset({
    "marketing", "marketing_lite", "utility", "authentication", "authentication_international",
    "service", "referral_conversion", "group_marketing", "group_utility", "group_service",
})
PRICING_TYPES = frozenset({"regular", "free_customer_service", "free_entry_point"})
DIRECTIONS = frozenset({"business_initiated", "user_initiated"})
OTHER = "other"


def bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER
