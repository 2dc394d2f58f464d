"""Pure planning: how often each channel may be polled, and when.

The binding budget for a channel's usage calls is its own (10/h) unless its WABA's (200/h) is
smaller in total, which happens above 20 channels. Within a WABA, idle channels (no new
messages over their last few polls) are weighted down so busy ones get fresher data; no channel
ever exceeds its own limit. Intervals carry a safety margin; the ledger remains the hard stop.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.config import Limit

DAY = 86_400


@dataclass(frozen=True, slots=True)
class PlanParams:
    usage_channel: Limit
    usage_waba: Limit
    channel_balance: Limit | None  # None: this replica polls no channel balances
    balance_shares_usage: bool
    margin: float
    idle_weight: float


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    usage_interval: float  # seconds between usage polls, margin included
    best_usage_interval: float  # what the budget allows with no margin: the freshness yardstick
    balance_interval: float | None


def _rate(limit: Limit) -> float:
    return limit.count / limit.window_seconds


def water_fill(weights: Sequence[float], cap: float, total: float) -> list[float]:
    """Rates proportional to weights, each at most `cap`, summing to at most `total`."""
    n = len(weights)
    if n == 0:
        return []
    if cap * n <= total:
        return [cap] * n
    rates = [0.0] * n
    remaining_total = total
    order = sorted(range(n), key=lambda i: weights[i], reverse=True)
    remaining_weight = sum(weights)
    for pos, i in enumerate(order):
        share = remaining_total * weights[i] / remaining_weight if remaining_weight else 0.0
        if share >= cap:
            rates[i] = cap
        else:
            # Everyone after this one is below the cap too: split the rest by weight.
            for j in order[pos:]:
                rates[j] = remaining_total * weights[j] / remaining_weight
            break
        remaining_total -= cap
        remaining_weight -= weights[i]
    return rates


def plan_waba(channel_ids: Sequence[str], idle: set[str], p: PlanParams) -> dict[str, ChannelPlan]:
    n = len(channel_ids)
    if n == 0:
        return {}
    waba_rate = _rate(p.usage_waba)
    channel_rate = _rate(p.usage_channel)
    balance_rate = 0.0
    if p.channel_balance is not None:
        balance_rate = _rate(p.channel_balance)
        if p.balance_shares_usage:
            # Balances move slowly: never let them take more than a tenth of either budget.
            balance_rate = min(balance_rate, 0.1 * waba_rate / n, 0.1 * channel_rate)
            waba_rate -= n * balance_rate
            channel_rate -= balance_rate
    weights = [p.idle_weight if ch in idle else 1.0 for ch in channel_ids]
    rates = water_fill(weights, channel_rate, waba_rate)
    balance_interval = (1 + p.margin) / balance_rate if balance_rate > 0 else None
    return {
        ch: ChannelPlan((1 + p.margin) / rate, 1 / rate, balance_interval)
        for ch, rate in zip(channel_ids, rates, strict=True)
    }


def plan_fleet(
    wabas: Mapping[str, Sequence[str]], idle: set[str], p: PlanParams
) -> dict[str, ChannelPlan]:
    plans: dict[str, ChannelPlan] = {}
    for channel_ids in wabas.values():
        plans.update(plan_waba(sorted(channel_ids), idle, p))
    return plans


def initial_phase(index: int, count: int, interval: float) -> float:
    """Offset of the index-th of `count` channels sharing a budget, spreading them evenly."""
    return interval * index / count if count else 0.0


def month_start(t: float) -> int:
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return calendar.timegm((d.year, d.month, 1, 0, 0, 0))


def reporting_month(now: float, grace: float) -> int:
    """The month the counters show: the previous one for `grace` seconds after a boundary, so
    late corrections to it are still polled and scraped before the counters restart."""
    return month_start(now - grace)


def day_start(t: float) -> int:
    return int(t // DAY) * DAY


def close_out_time(day_boundary: int, delay: float, index: int, count: int) -> float:
    """When the index-th of `count` channels re-reads the day that just ended, spread over a
    few minutes so a fleet does not poll at once."""
    spread = min(600.0, max(60.0, count * 0.5))
    return day_boundary + delay + spread * index / max(count, 1)
