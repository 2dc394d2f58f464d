"""Deterministic traffic: what each channel sent, at any moment, as pure functions of time.

Each (channel, UTC day, category, pricing type) has a daily total; within the day the cumulative
count follows a smooth curve that is slow at night and fast in the afternoon, so traffic grows
through the day. Any bucket's volume is a difference of cumulative counts, so half-hour points
add up to days and days to months exactly. Money is exact: integer volumes times 4-decimal prices.

Prices follow Meta's rules in force at each moment, with the demo rate card's numbers
(`exporter/webhooks/ratecards/example-usd.toml`, copied here so the simulator shares no code
with the exporter; a test holds them equal): from 2026-10-01 service messages and utility
messages inside the customer service window are charged per message, so those streams are
reported as REGULAR, with a cost, from then on. No bucket straddles that instant: every bucket
boundary (half hour, day, month) falls on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from exporter.simulator.fleet import SimChannel, unit

DAY = 86_400
HALF_HOUR = 1_800

# (API category, API pricing type, mean messages per day at activity 1.0)
STREAMS: tuple[tuple[str, str, int], ...] = (
    ("MARKETING", "REGULAR", 420),
    ("MARKETING", "FREE_ENTRY_POINT", 6),
    ("MARKETING_LITE", "REGULAR", 160),
    ("UTILITY", "REGULAR", 260),
    ("UTILITY", "FREE_CUSTOMER_SERVICE", 120),
    ("AUTHENTICATION", "REGULAR", 210),
    ("SERVICE", "FREE_CUSTOMER_SERVICE", 900),
)
DIRECTIONS: tuple[tuple[str, int], ...] = (("USER_INITIATED", 24), ("BUSINESS_INITIATED", 9))

# From this instant (2026-10-01 00:00 UTC) Meta charges service messages and utility messages
# inside the customer service window per message (Meta, "Upcoming pricing updates", 2026-07-01).
SERVICE_CHARGED_FROM = 1_790_812_800
# The streams that are charged, as REGULAR, from SERVICE_CHARGED_FROM.
CHARGED_FROM_OCTOBER_2026 = frozenset({("UTILITY", "FREE_CUSTOMER_SERVICE"),
                                       ("SERVICE", "FREE_CUSTOMER_SERVICE")})

# Per-message prices by market (currency units) of the example card's first period (Meta's USD
# list prices effective 2025-07-01); free pricing types cost nothing.
PRICES: dict[str, dict[str, Decimal]] = {
    "MARKETING": {"DE": Decimal("0.1365"), "GB": Decimal("0.0529"), "BR": Decimal("0.0625"),
                  "IN": Decimal("0.0107"), "US": Decimal("0.0250"), "ES": Decimal("0.0615")},
    "MARKETING_LITE": {"DE": Decimal("0.1229"), "GB": Decimal("0.0476"), "BR": Decimal("0.0563"),
                       "IN": Decimal("0.0096"), "US": Decimal("0.0225"), "ES": Decimal("0.0554")},
    "UTILITY": {"DE": Decimal("0.0550"), "GB": Decimal("0.0220"), "BR": Decimal("0.0080"),
                "IN": Decimal("0.0014"), "US": Decimal("0.0040"), "ES": Decimal("0.0200")},
    "AUTHENTICATION": {"DE": Decimal("0.0768"), "GB": Decimal("0.0358"),
                       "BR": Decimal("0.0315"), "IN": Decimal("0.0014"),
                       "US": Decimal("0.0135"), "ES": Decimal("0.0345")},
}
# The example card's period from 2026-10-01: Brazil's 2026 figures, and service at each
# market's utility rate.
_UTILITY_2026_10 = PRICES["UTILITY"] | {"BR": Decimal("0.0085")}
PRICES_2026_10: dict[str, dict[str, Decimal]] = PRICES | {
    "MARKETING": PRICES["MARKETING"] | {"BR": Decimal("0.0782")},
    "UTILITY": _UTILITY_2026_10,
    "AUTHENTICATION": PRICES["AUTHENTICATION"] | {"BR": Decimal("0.0085")},
    "SERVICE": dict(_UTILITY_2026_10),
}
# (valid from, prices), oldest first; traffic before the first period takes the first's prices.
PRICE_PERIODS: tuple[tuple[int, dict[str, dict[str, Decimal]]], ...] = (
    (1_751_328_000, PRICES),  # 2025-07-01
    (SERVICE_CHARGED_FROM, PRICES_2026_10),
)
# Business-initiated calls: price per 6-second pulse, partial pulses rounded up (the same in
# every period of the example card).
PULSE_PRICE: dict[str, Decimal] = {"DE": Decimal("0.0060"), "GB": Decimal("0.0040"),
                                   "BR": Decimal("0.0020"), "IN": Decimal("0.0010"),
                                   "US": Decimal("0.0015"), "ES": Decimal("0.0050")}
# Bucket sizes by granularity, matched in any case here (0: calendar months). What the endpoint
# accepts is the app's business: Meta's enum is HALF_HOUR, DAILY, MONTHLY.
GRANULARITIES = {"half_hour": HALF_HOUR, "daily": DAY, "monthly": 0}
META_GRANULARITIES = frozenset({"HALF_HOUR", "DAILY", "MONTHLY"})
LEGACY_GRANULARITIES = frozenset({"half_hour", "daily", "monthly"})
# Meta's volume tiers apply to utility and authentication (and, since paid, to service); a
# channel here never sends 100,000 of one in a month, so its billable points sit in the first.
TIERED_CATEGORIES = frozenset({"UTILITY", "AUTHENTICATION", "AUTHENTICATION_INTERNATIONAL",
                               "SERVICE"})
FIRST_TIER = "0:100000"


def pricing_type_at(category: str, pricing_type: str, at: float) -> str:
    """How Meta reports a stream's messages sent at `at`: REGULAR once it charges them."""
    if at >= SERVICE_CHARGED_FROM and (category, pricing_type) in CHARGED_FROM_OCTOBER_2026:
        return "REGULAR"
    return pricing_type


def prices_at(at: float) -> dict[str, dict[str, Decimal]]:
    """The price table in force at `at`."""
    table = PRICE_PERIODS[0][1]
    for valid_from, prices in PRICE_PERIODS:
        if valid_from <= at:
            table = prices
    return table


def price(category: str, pricing_type: str, country: str, at: float) -> Decimal:
    """One message's price at `at`; free pricing types cost nothing."""
    if pricing_type_at(category, pricing_type, at) != "REGULAR":
        return Decimal(0)
    return prices_at(at).get(category, {}).get(country, Decimal(0))


def tier(category: str, pricing_type: str, country: str, at: float = math.inf) -> str:
    """The `tier` a point carries: only billable points of tiered categories have one."""
    if category in TIERED_CATEGORIES and price(category, pricing_type, country, at) > 0:
        return FIRST_TIER
    return ""


def diurnal(seconds_into_day: float) -> float:
    """Share of a day's traffic sent by this time of day: 0 at 00:00, 1 at 24:00, monotone."""
    x = min(max(seconds_into_day / DAY, 0.0), 1.0)
    # density 0.2 + sin²(πx): quiet at night, busiest mid-afternoon UTC
    return (0.2 * x + x / 2 - math.sin(2 * math.pi * x) / (4 * math.pi)) / 0.7


@lru_cache(maxsize=200_000)
def _daily_total(  # noqa: PLR0917 - positional so lru_cache keys stay cheap
    seed: int, channel_id: str, activity: float, day: int, stream: str, mean: int
) -> int:
    if activity == 0:
        return 0
    return int(mean * activity * (0.5 + unit(seed, channel_id, day, stream)))


def cumulative(seed: int, ch: SimChannel, stream: str, mean: int, t: float) -> int:
    """Messages (or calls) of one stream sent from the start of t's UTC day up to t."""
    day = int(t // DAY) * DAY
    total = _daily_total(seed, ch.id, ch.activity, day, stream, mean)
    return int(total * diurnal(t - day))


def call_duration(seed: int, channel_id: str, day: int, direction: str, index: int) -> int:
    return 20 + int(unit(seed, channel_id, day, direction, index) * 400)


@dataclass(frozen=True, slots=True)
class PricingPoint:
    start: int
    end: int
    category: str
    pricing_type: str
    volume: int
    cost: Decimal


@dataclass(frozen=True, slots=True)
class CallPoint:
    start: int
    end: int
    direction: str
    count: int
    duration: int
    cost: Decimal


def buckets(start: int, end: int, granularity: str) -> Iterator[tuple[int, int]]:
    """[bucket start, bucket end) pairs covering [start, end]."""
    size = GRANULARITIES[granularity.lower()]
    t = start
    while t <= end:
        b_end = (t // size + 1) * size if size else _next_month(t)
        yield t, b_end
        t = b_end


def _next_month(t: int) -> int:
    import datetime as dt  # noqa: PLC0415 - only the monthly granularity needs it

    d = dt.datetime.fromtimestamp(t, dt.UTC)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return int(dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp())


def _day_slices(  # noqa: PLR0917 - internal, hot
    seed: int, ch: SimChannel, stream: str, mean: int, a: float, b: float
) -> Iterator[tuple[int, int, int]]:
    """For each UTC day that [a, b) touches: (day, events before the slice, events up to its
    end), counted from the start of that day."""
    t = a
    while t < b:
        day = int(t // DAY) * DAY
        cut = min(b, day + DAY)
        upper = (_daily_total(seed, ch.id, ch.activity, day, stream, mean) if cut == day + DAY
                 else cumulative(seed, ch, stream, mean, cut))
        yield day, cumulative(seed, ch, stream, mean, t), upper
        t = cut


def _count(  # noqa: PLR0917 - internal, hot
    seed: int, ch: SimChannel, stream: str, mean: int, a: float, b: float
) -> int:
    """Events of a stream in [a, b): differences of cumulative counts, day by day."""
    return sum(upper - first for _, first, upper in _day_slices(seed, ch, stream, mean, a, b))


@lru_cache(maxsize=100_000)
def _day_calls(  # noqa: PLR0917 - positional so lru_cache keys stay cheap
    seed: int, channel_id: str, country: str, activity: float, day: int, direction: str,
    mean: int,
) -> tuple[tuple[int, ...], tuple[Decimal, ...]]:
    """Prefix sums of call durations and costs over one day's calls, so any bucket is O(1)."""
    total = _daily_total(seed, channel_id, activity, day, direction, mean)
    durations = [0]
    costs = [Decimal(0)]
    pulse = PULSE_PRICE.get(country, Decimal(0)) if direction == "BUSINESS_INITIATED" else 0
    for index in range(total):
        duration = call_duration(seed, channel_id, day, direction, index)
        durations.append(durations[-1] + duration)
        costs.append(costs[-1] + pulse * -(-duration // 6))
    return tuple(durations), tuple(costs)


def _calls(  # noqa: PLR0917 - internal, hot
    seed: int, ch: SimChannel, direction: str, mean: int, a: float, b: float
) -> tuple[int, int, Decimal]:
    count, seconds, cost = 0, 0, Decimal(0)
    for day, first, upper in _day_slices(seed, ch, direction, mean, a, b):
        if upper > first:
            durations, costs = _day_calls(seed, ch.id, ch.country, ch.activity, day, direction,
                                          mean)
            count += upper - first
            seconds += durations[upper] - durations[first]
            cost += costs[upper] - costs[first]
    return count, seconds, cost


def usage_points(  # noqa: PLR0917 - mirrors the endpoint's parameters
    seed: int, ch: SimChannel, start: int, end: int, now: float, granularity: str
) -> tuple[list[PricingPoint], list[CallPoint]]:
    """The points Get Channel Usage returns for [start, end], never past `now`."""
    cut = min(float(end) + 1, now)  # end_date is inclusive to the second
    pricing: list[PricingPoint] = []
    calls: list[CallPoint] = []
    if cut <= start:
        return pricing, calls
    for b_start, b_end in buckets(start, int(cut), granularity):
        a, b = float(b_start), min(float(b_end), cut)
        if b <= a:
            continue
        # Streams Meta reports alike (in-window utility, charged, is REGULAR utility) are one
        # point, as the analytics have one row per category and pricing type.
        volumes: dict[tuple[str, str], int] = {}
        for category, pricing_type, mean in STREAMS:
            volume = _count(seed, ch, f"{category}/{pricing_type}", mean, a, b)
            if volume:
                reported = (category, pricing_type_at(category, pricing_type, a))
                volumes[reported] = volumes.get(reported, 0) + volume
        for (category, pricing_type), volume in volumes.items():
            pricing.append(PricingPoint(b_start, b_end, category, pricing_type, volume,
                                        volume * price(category, pricing_type, ch.country, a)))
        for direction, mean in DIRECTIONS:
            count, seconds, cost = _calls(seed, ch, direction, mean, a, b)
            if count:
                calls.append(CallPoint(b_start, b_end, direction, count, seconds, cost))
    return pricing, calls


MessageTruth = dict[tuple[str, str], tuple[int, Decimal]]
CallTruth = dict[str, tuple[int, int, Decimal]]


def month_to_date_totals(seed: int, ch: SimChannel, month_start: int,
                         now: float) -> tuple[MessageTruth, CallTruth]:
    """What a month-to-date usage call at `now` adds up to, keyed in lower case."""
    pricing, calls = usage_points(seed, ch, month_start, int(now), now, "daily")
    month_end = _next_month(month_start)
    messages: MessageTruth = {}
    for p in pricing:
        if p.start >= month_end:
            continue
        key = (p.category.lower(), p.pricing_type.lower())
        volume, cost = messages.get(key, (0, Decimal(0)))
        messages[key] = (volume + p.volume, cost + p.cost)
    call_totals: CallTruth = {}
    for c in calls:
        if c.start >= month_end:
            continue
        n, s, cost = call_totals.get(c.direction.lower(), (0, 0, Decimal(0)))
        call_totals[c.direction.lower()] = (n + c.count, s + c.duration, cost + c.cost)
    return messages, call_totals


@lru_cache(maxsize=200_000)
def _day_spend(seed: int, ch: SimChannel, day: int) -> Decimal:
    pricing, calls = usage_points(seed, ch, day, day + DAY - 1, day + DAY, "daily")
    return sum((p.cost for p in pricing), Decimal(0)) + sum((c.cost for c in calls), Decimal(0))


def spent(seed: int, ch: SimChannel, month_start: int, now: float) -> Decimal:
    """Money spent from month_start to now: whole days cached, today computed."""
    today = int(now // DAY) * DAY
    total = sum((_day_spend(seed, ch, d) for d in range(month_start, today, DAY)), Decimal(0))
    pricing, calls = usage_points(seed, ch, today, int(now), now, "daily")
    return total + sum((p.cost for p in pricing), Decimal(0)) + sum(
        (c.cost for c in calls), Decimal(0))
