"""Pure planning: how often each call may be made, and when. Per WABA, the usage and channel
balance intervals of its channels, or the slot grid of a WABA whose own budget binds; the
client and partner balance intervals; start phases and the daily close-out times.

The binding budget for a channel's usage calls is its own (10/h) unless its WABA's (200/h) is
smaller in total, which happens above 20 channels. Within a WABA, idle channels (no new
messages over their last few polls) are weighted down so busy ones get fresher data; no channel
ever exceeds its own limit. Intervals carry a safety margin; the ledger remains the hard stop.

A channel never polled (a start without state, or one discovery just found) is polled at once,
as far as its windows have room: on its own timer with its second poll a phase later, so the
round ends spread as the steady state is (`first_poll_times`); on a slot grid in a first round
ahead of the grid, which then resumes where those calls leave it room (`grid_resumes`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from exporter.domain import Limit


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


def client_balance_interval(
    limit: Limit | None, n_clients: int, *, floor: float, shared: bool, margin: float
) -> float:
    """Seconds between one client's balance calls: the configured interval, or longer when the
    budget (this shard's share; `shared` when all its clients draw from it together) cannot
    pay for that with the margin."""
    if limit is None or n_clients == 0:
        return floor
    per_key = limit.window_seconds / limit.count
    return max(floor, per_key * (n_clients if shared else 1) * (1 + margin))


def partner_balance_interval(limit: Limit, margin: float) -> float:
    """Seconds between partner balance calls: its whole budget, spread with the margin."""
    return limit.window_seconds / limit.count * (1 + margin)


def initial_phase(index: int, count: int, interval: float) -> float:
    """Offset of the index-th of `count` channels sharing a budget, spreading them evenly."""
    return interval * index / count if count else 0.0


def first_poll_times(now: float, index: int, count: int, interval: float) -> tuple[float, float]:
    """When a channel never polled (a start without state, or one discovery just found) is
    polled first, and how much later than its interval its second poll then goes.

    Where the channel's own budget binds, the first poll goes at once: its window is empty,
    and its WABA's holds at most what its channels' windows hold. The second poll goes a
    phase later than the interval, so the WABA's channels leave the first round spread
    evenly as in the steady state (a gap longer than the interval crowds no window)."""
    return now, initial_phase(index, count, interval)


def close_out_time(day_boundary: int, delay: float, index: int, count: int) -> float:
    """When the index-th of `count` channels re-reads the day that just ended, spread over a
    few minutes so a fleet does not poll at once."""
    spread = min(600.0, max(60.0, count * 0.5))
    return day_boundary + delay + spread * index / max(count, 1)


def balance_slot_gap(balance_interval: float, n_channels: int, margin: float) -> float:
    """The least time between two channel balance calls on a WABA's slot grid: the rate the
    plan gave them, without its margin. Balance calls come due at that rate with the margin,
    so a backlog (a restart spreads the balances not read yet again from its own start)
    drains slowly instead of taking several slots in a row from the usage polls."""
    return balance_interval / ((1 + margin) * max(n_channels, 1))


def waba_bound(n_channels: int, p: PlanParams) -> bool:
    """Whether a WABA's own budget, not its channels', limits its usage calls. Exact in
    integers: 20 channels x 10/h is exactly 200/h, which floats can get wrong."""
    return (n_channels * p.usage_channel.count * p.usage_waba.window_ms
            > p.usage_waba.count * p.usage_channel.window_ms)


@dataclass(frozen=True, slots=True)
class SlotParams:
    spacing: float  # seconds between a WABA's usage calls
    min_gap: float  # seconds between one channel's usage calls (its own budget, and margin)


def slot_params(p: PlanParams) -> SlotParams:
    """The slot grid of a WABA-bound WABA: its whole usage budget spread evenly with the
    margin. Channel balance calls that share the budget take slots too (the poller gives them
    the next slot when due), so nothing else lands in the WABA's window. A channel's minimum
    gap leaves room in its own window for one balance call (if they share it), so no window
    can overflow whatever the phases: ten calls at that gap span more than the window."""
    waba, channel = p.usage_waba, p.usage_channel
    balances = 1 if p.channel_balance is not None and p.balance_shares_usage else 0
    return SlotParams((1 + p.margin) * waba.window_seconds / waba.count,
                      (1 + p.margin) * channel.window_seconds / (channel.count - balances))


def grid_resumes(calls_ms: Sequence[int], now_ms: int, spacing_ms: int) -> int:
    """The earliest time (ms, at least `now_ms`) a WABA's slot grid may go on after the calls
    its windows still see (oldest first): as if every one of them had been a slot, so each
    call is followed by as many spacings as there were calls from it on.

    Then any window ending at a grid slot that reaches back to a call c holds the calls from c
    on and the slots after them, which span at least a spacing each: no more than a window of
    the plain grid holds. A first round (many calls at once) so pushes the grid one spacing
    per call, and a restart resumes the grid where the run before left it."""
    resumes = now_ms
    n = len(calls_ms)
    for j, t in enumerate(calls_ms):
        resumes = max(resumes, t + (n - j) * spacing_ms)
    return resumes


class WabaSlots:
    """The usage calls of one WABA whose own budget binds: one call every `spacing` seconds,
    each slot given to a channel by stride scheduling. Each channel has a stride (1 for busy,
    1/idle_weight for idle) and a pass; a slot goes to the eligible channel with the lowest
    pass, whose pass then grows by its stride. Over time every channel gets slots in proportion
    to its weight, so idle channels yield to busy ones, and a channel going idle or busy
    changes its own stride only: nothing is re-planned. A channel is eligible once `min_gap`
    has passed since its last call (its own budget), and if the caller's check (the ledger,
    a call still in flight) agrees.

    Pure and synchronous: the poller asks it at each slot, and the schedule benchmark drives
    the same object over simulated months.
    """

    def __init__(self, params: SlotParams, idle_weight: float) -> None:
        self.params = params
        self._idle_stride = 1 / idle_weight
        self._stride: dict[str, float] = {}
        self._pass: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # entries whose pass is stale are skipped
        self._virtual = 0.0  # the pass of the last slot given

    def set_channels(self, ids: Sequence[str], idle: set[str],
                     last_call: Mapping[str, float]) -> None:
        """The WABA's channels now. Newcomers join at the current pass, the least recently
        polled first (never-polled ones before all)."""
        for gone in set(self._pass) - set(ids):
            del self._pass[gone], self._stride[gone]
            self._last.pop(gone, None)
        new = sorted((ch for ch in ids if ch not in self._pass),
                     key=lambda ch: (last_call.get(ch, -math.inf), ch))
        for rank, ch in enumerate(new):
            self._stride[ch] = self._idle_stride if ch in idle else 1.0
            if ch in last_call:
                self._last[ch] = last_call[ch]
            self._enter(ch, self._virtual + rank / (len(new) + 1))
        for ch in ids:
            self.set_idle(ch, ch in idle)

    def set_idle(self, channel_id: str, idle: bool) -> None:
        if channel_id in self._stride:
            self._stride[channel_id] = self._idle_stride if idle else 1.0

    def channels(self) -> list[str]:
        return list(self._pass)

    def never_called(self) -> list[str]:
        """Channels without a call yet (since this object knows them): those a first round
        polls ahead of the grid."""
        return [ch for ch in self._pass if ch not in self._last]

    def take_first(self, now: float, room: int,
                   allowed: Callable[[str], bool] = lambda _: True) -> list[str]:
        """Up to `room` never-called channels, in turn order, each taken at `now` as if it had
        been given a slot: its pass moves on and its minimum gap starts.

        This is the first round that fills a new WABA's numbers at once. Each such call
        borrows one of the grid's next slots (the caller pushes the grid one spacing per call),
        which only moves calls earlier. A window that then holds an early call and the grid
        after it holds what the grid alone would have; a window ending at an early call holds
        what the ledger holds now plus the early calls, so `room` is what the WABA's window
        has left now, and no window can overflow."""
        chosen: list[str] = []
        for ch in sorted(self.never_called(), key=lambda c: (self._pass[c], c)):
            if len(chosen) >= room:
                break
            if not allowed(ch):
                continue
            pass_ = self._pass[ch]
            self._virtual = max(self._virtual, pass_)
            self._last[ch] = now
            self._enter(ch, pass_ + self._stride[ch])
            chosen.append(ch)
        return chosen

    def _enter(self, channel_id: str, pass_: float) -> None:
        self._pass[channel_id] = pass_
        heapq.heappush(self._heap, (pass_, channel_id))

    def take(self, now: float, allowed: Callable[[str], bool] = lambda _: True) -> str | None:
        """The channel this slot (at `now`) goes to, or None if no channel may go now."""
        aside: list[tuple[float, str]] = []
        chosen = None
        while self._heap:
            entry = heapq.heappop(self._heap)
            pass_, ch = entry
            if self._pass.get(ch) != pass_:
                continue  # superseded, or the channel left
            if now < self._last.get(ch, -math.inf) + self.params.min_gap or not allowed(ch):
                aside.append(entry)
                continue
            chosen = ch
            self._virtual = pass_
            self._last[ch] = now
            self._enter(ch, pass_ + self._stride[ch])
            break
        for entry in aside:
            heapq.heappush(self._heap, entry)
        if len(self._heap) > 4 * len(self._pass) + 64:
            self._heap = [(p, ch) for ch, p in self._pass.items()]  # drop stale entries
            heapq.heapify(self._heap)
        return chosen
