"""Thirty days of the polling schedule for a 10,000-channel fleet, on a virtual clock.

    .venv/bin/python bench/schedule.py [--channels 10000] [--wabas 1000] [--days 30]

What runs: the exporter's own planning code with its default settings. WABAs whose own budget
binds (over 20 channels) are driven slot by slot through `schedule.WabaSlots`, the object the
poller asks at each slot, with channels going idle and busy as their traffic stops and starts
(the poller's rule: idle after 3 polls with nothing new). Channels whose own budget binds poll
at their planned interval from evenly spread phases with the daily close-out poll where the
window has room, as the poller does, computed in closed form (tests/system/test_schedule_day.py
checks the same rules event by event on the real poller). Channel balance calls share the usage
budgets, as by default.

What is checked, from the calls alone, as the API's sliding windows would see them: every
window of every channel (10 an hour, usage and balance calls together), every WABA (200 an
hour), and every channel balance (1 an hour). Data age is the time since a channel's last usage
call, averaged over time; its yardstick is half the interval an equal split of the binding
budget allows with no margin (perfect spacing, nothing left unused). It is reported over all
time, and over the time a channel has new traffic (when a stale number is a wrong number):
idle channels yield their share to busy ones on purpose, which raises the first and lowers the
second. WABAs are simulated in worker processes.
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import heapq
import math
import multiprocessing
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleet import waba_sizes
from exporter.calendar import DAY
from exporter.clock import to_ms
from exporter.config import Settings
from exporter.polling.schedule import (
    PlanParams,
    WabaSlots,
    balance_slot_gap,
    close_out_time,
    first_poll_times,
    grid_resumes,
    initial_phase,
    plan_waba,
    slot_params,
    waba_bound,
)

START = calendar.timegm((2026, 11, 20, 9, 30, 0))  # crosses a month boundary
HOUR = 3600.0


def default(name: str) -> object:
    return Settings.model_fields[name].default


def params(idle_weight: float | None = None, margin: float | None = None) -> PlanParams:
    return PlanParams(
        usage_channel=default("limit_usage_channel"),  # type: ignore[arg-type]
        usage_waba=default("limit_usage_waba"),  # type: ignore[arg-type]
        channel_balance=default("limit_channel_balance"),  # type: ignore[arg-type]
        balance_shares_usage=bool(default("channel_balance_shares_usage_budget")),
        margin=float(default("safety_margin")) if margin is None else margin,  # type: ignore[arg-type]
        idle_weight=float(default("idle_weight")) if idle_weight is None else idle_weight,  # type: ignore[arg-type]
    )


@dataclass(frozen=True, slots=True)
class Activity:
    """When a channel has new traffic: never, always, or in its WABA's business hours."""

    kind: str  # "dormant", "always", "daytime"
    offset: float = 0.0  # the WABA's UTC offset, seconds
    opens: float = 8 * HOUR
    closes: float = 20 * HOUR

    def any_between(self, a: float, b: float) -> bool:
        if self.kind != "daytime":
            return self.kind == "always"
        a, b = a + self.offset, b + self.offset
        day = math.floor(a / DAY) * DAY
        while day < b:
            if a < day + self.closes and b > day + self.opens:
                return True
            day += DAY
        return False

    def active_age(self, t: np.ndarray) -> tuple[float, float]:
        """Over the gaps between calls `t`: the integral of data age while there is new traffic,
        and how long there is."""
        if self.kind == "dormant" or len(t) < 2:
            return 0.0, 0.0
        a, b = t[:-1], t[1:]
        if self.kind == "always":
            g = b - a
            return float(np.sum(g * g) / 2), float(np.sum(g))
        age = span = 0.0
        shifted = a + self.offset
        first_day = np.floor(shifted / DAY) * DAY - self.offset
        for k in (-1, 0, 1):  # gaps are far shorter than a day: three windows cover each
            lo = np.maximum(a, first_day + k * DAY + self.opens)
            hi = np.minimum(b, first_day + k * DAY + self.closes)
            ok = hi > lo
            age += float(np.sum(((hi - a) ** 2 - (lo - a) ** 2)[ok]) / 2)
            span += float(np.sum((hi - lo)[ok]))
        return age, span


@dataclass
class Result:
    calls: int = 0
    balance_calls: int = 0
    violations: dict[str, int] = field(default_factory=lambda: {
        "channel": 0, "waba": 0, "channel_balance": 0})
    windows_checked: dict[str, int] = field(default_factory=lambda: {
        "channel": 0, "waba": 0, "channel_balance": 0})
    age: float = 0.0  # integral of data age over all time, all channels
    best_age: float = 0.0  # the same with the yardstick interval
    active_age: float = 0.0
    active_best: float = 0.0
    bound_age: float = 0.0  # WABA-bound channels only
    bound_best: float = 0.0
    bound_active_age: float = 0.0
    bound_active_best: float = 0.0
    flips: int = 0
    close_outs: int = 0
    slots_taken: int = 0
    slots_idle: int = 0
    first_poll_latest: float = 0.0  # seconds from the start to the last channel's first poll
    first_poll_within_60s: int = 0  # channels whose first poll came within 60 s of the start

    def add(self, other: Result) -> None:
        for name in ("calls", "balance_calls", "age", "best_age", "active_age", "active_best",
                     "bound_age", "bound_best", "bound_active_age", "bound_active_best",
                     "flips", "close_outs", "slots_taken", "slots_idle",
                     "first_poll_within_60s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.first_poll_latest = max(self.first_poll_latest, other.first_poll_latest)
        for kind in self.violations:
            self.violations[kind] += other.violations[kind]
            self.windows_checked[kind] += other.windows_checked[kind]


def violations(times: np.ndarray, count: int, window: float) -> int:
    """Calls that found `count` others in the window before them, as the API counts."""
    if len(times) <= count:
        return 0
    return int(np.count_nonzero(times[count:] - times[:-count] < window))


def balance_times(index: int, n: int, plan_usage: float, interval: float, end: float,
                  ) -> np.ndarray:
    first = START + initial_phase(index, n, interval) + plan_usage / 2
    return np.arange(first, end, interval)


@dataclass(frozen=True, slots=True)
class Job:
    w_index: int
    n_wabas: int
    size: int
    days: int
    seed: int
    idle_weight: float | None
    idle_after: int | None


def simulate_waba(job: Job) -> Result:
    w_index, n_wabas, size, days, seed = job.w_index, job.n_wabas, job.size, job.days, job.seed
    idle_weight = job.idle_weight
    p = params(idle_weight)
    rnd = random.Random(seed * 1_000_003 + w_index)
    offset = rnd.randrange(-8, 10) * HOUR
    ids = [f"w{w_index:04d}c{i:04d}" for i in range(size)]
    activity = {ch: Activity(rnd.choices(("dormant", "always", "daytime"), (15, 15, 70))[0],
                             offset) for ch in ids}
    end = START + days * DAY
    plans = plan_waba(ids, set(), p)
    fair = plan_waba(ids, set(), PlanParams(p.usage_channel, p.usage_waba, p.channel_balance,
                                            p.balance_shares_usage, 0.0, 1.0))
    out = Result()
    usage: dict[str, np.ndarray] = {}
    balances = {ch: balance_times(i, size, plans[ch].usage_interval,
                                  plans[ch].balance_interval or math.inf, end)
                for i, ch in enumerate(ids)} if p.channel_balance is not None else {}
    bound = waba_bound(size, p)
    if bound:
        idle_after = job.idle_after or int(default("idle_after_polls"))  # type: ignore[call-overload]
        usage = _slotted(w_index, n_wabas, ids, activity, p, idle_after, end, out, balances,
                         {ch: plans[ch].balance_interval or math.inf for ch in ids})
    else:
        usage = _cadenced(ids, plans, balances, p, end, out)
    limit_c, limit_w = p.usage_channel, p.usage_waba
    everything = []
    for ch in ids:
        t = usage[ch]
        b = balances.get(ch, np.empty(0))
        out.calls += len(t)
        out.balance_calls += len(b)
        if len(t):
            out.first_poll_latest = max(out.first_poll_latest, float(t[0]) - START)
            out.first_poll_within_60s += int(t[0] - START <= 60)
        charged = np.sort(np.concatenate([t, b])) if p.balance_shares_usage else t
        out.violations["channel"] += violations(charged, limit_c.count, limit_c.window_seconds)
        out.windows_checked["channel"] += len(charged)
        if p.channel_balance is not None:
            out.violations["channel_balance"] += violations(
                b, p.channel_balance.count, p.channel_balance.window_seconds)
            out.windows_checked["channel_balance"] += len(b)
        everything.append(charged)
        # Data age from the first call on (before it, the channel has no number at all).
        g = np.diff(np.append(t, end))
        best = fair[ch].best_usage_interval
        out.age += float(np.sum(g * g) / 2)
        out.best_age += float(np.sum(g)) * best / 2
        if bound:
            out.bound_age += float(np.sum(g * g) / 2)
            out.bound_best += float(np.sum(g)) * best / 2
        age, span = activity[ch].active_age(np.append(t, end))
        out.active_age += age
        out.active_best += span * best / 2
        if bound:
            out.bound_active_age += age
            out.bound_active_best += span * best / 2
    waba_calls = np.sort(np.concatenate(everything))
    out.violations["waba"] += violations(waba_calls, limit_w.count, limit_w.window_seconds)
    out.windows_checked["waba"] += len(waba_calls)
    return out


def _slotted(w_index: int, n_wabas: int, ids: list[str], activity: dict[str, Activity],
             p: PlanParams, idle_after: int, end: float, out: Result,
             balances: dict[str, np.ndarray], balance_interval: dict[str, float],
             ) -> dict[str, np.ndarray]:
    """Slot by slot through WabaSlots, as the poller does: idle after `idle_after` polls with
    nothing new, busy again at the first poll that finds something. Balance calls sharing the
    budget take the next slot once due, and are due again an interval after they went (the
    poller's rule); `balances` is rewritten with the times they went."""
    shared = p.balance_shares_usage and bool(balances)
    due = [(float(b[0]), ch) for ch, b in balances.items() if len(b)] if shared else []
    heapq.heapify(due)
    went: dict[str, list[float]] = {ch: [] for ch in ids}
    slot = slot_params(p)
    slots = WabaSlots(slot, p.idle_weight)
    slots.set_channels(ids, set(), {})
    times: dict[str, list[float]] = {ch: [] for ch in ids}
    unchanged = dict.fromkeys(ids, 0)
    # The first round (a start without state): every channel at once, as the WABA's window
    # has room; the grid resumes where those calls leave it room.
    first = slots.take_first(START, p.usage_waba.count)
    for ch in first:
        times[ch].append(START)
    t = max(START + initial_phase(w_index, n_wabas, slot.spacing),
            grid_resumes([to_ms(START)] * len(first), to_ms(START), to_ms(slot.spacing)) / 1000)
    gap = balance_slot_gap(next(iter(balance_interval.values()), math.inf), len(ids), p.margin)
    last_balance = -math.inf
    take = slots.take
    while t < end:
        if due and due[0][0] <= t and t >= last_balance + gap:
            _, ch = heapq.heappop(due)
            went[ch].append(t)
            heapq.heappush(due, (t + balance_interval[ch], ch))
            last_balance = t
            t += slot.spacing
            continue
        ch = take(t)
        if ch is None:
            out.slots_idle += 1
        else:
            out.slots_taken += 1
            mine = times[ch]
            if not mine or activity[ch].any_between(mine[-1], t):
                if unchanged[ch] >= idle_after:
                    slots.set_idle(ch, False)
                    out.flips += 1
                unchanged[ch] = 0
            else:
                unchanged[ch] += 1
                if unchanged[ch] == idle_after:
                    slots.set_idle(ch, True)
                    out.flips += 1
            mine.append(t)
        t += slot.spacing
    if shared:
        balances.update({ch: np.array(v) for ch, v in went.items()})
    return {ch: np.array(v) for ch, v in times.items()}


def _cadenced(ids: list[str], plans: dict, balances: dict[str, np.ndarray], p: PlanParams,
              end: float, out: Result) -> dict[str, np.ndarray]:
    """Each channel polled at the start (the first round), then at its planned interval from
    an evenly spread phase after that (the poller's first_poll_times); after each UTC
    midnight (plus the delay, spread) the next poll is brought forward to close the day where
    the channel's window has room, and the cadence goes on from the poll it replaced."""
    delay = float(default("close_out_delay_seconds"))  # type: ignore[arg-type]
    span = p.usage_channel.window_seconds + min(2.0, p.usage_channel.window_seconds / 20)
    limit = p.usage_channel.count
    reserve = 1 if p.balance_shares_usage and p.channel_balance is not None else 0
    n = len(ids)
    out_times: dict[str, list[np.ndarray]] = {ch: [] for ch in ids}
    for index, ch in enumerate(ids):
        interval = plans[ch].usage_interval
        first, settle = first_poll_times(START, index, n, interval)
        out_times[ch].append(np.array([first]))
        anchor = first + interval + settle
        b = balances.get(ch, np.empty(0)) if p.balance_shares_usage else np.empty(0)
        boundary = (math.floor(START / DAY) + 1) * DAY
        recent: np.ndarray = np.array([first])
        while anchor < end:
            c = close_out_time(boundary, delay, index, n) if boundary < end else end
            segment = np.arange(anchor, min(c, end), interval)
            out_times[ch].append(segment)
            if c >= end:
                break
            recent = np.concatenate([recent[-limit:], segment[-limit:]])
            in_window = (np.count_nonzero(recent > c - span)
                         + int(bisect.bisect_right(b, c) - bisect.bisect_right(b, c - span)))
            regular = segment[-1] + interval if len(segment) else anchor  # next due at c
            if in_window + 1 + reserve <= limit:  # room, as the poller's _close_out_room sees it
                out_times[ch].append(np.array([c]))
                recent = np.append(recent, c)
                out.close_outs += 1
                anchor = regular + interval
            else:
                anchor = regular
            boundary += DAY
    return {ch: np.concatenate(parts) if parts else np.empty(0)
            for ch, parts in out_times.items()}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=10_000)
    ap.add_argument("--wabas", type=int, default=1_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    ap.add_argument("--idle-weight", type=float, default=None,
                    help="instead of the default D360_IDLE_WEIGHT (below 1: idle channels yield)")
    ap.add_argument("--idle-after", type=int, default=None,
                    help="instead of the default D360_IDLE_AFTER_POLLS")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    sizes = waba_sizes(args.channels, args.wabas, random.Random(args.seed))
    order = sorted(range(len(sizes)), key=lambda w: -sizes[w])  # big ones first: even load
    jobs = [Job(w, len(sizes), sizes[w], args.days, args.seed, args.idle_weight, args.idle_after)
            for w in order]
    total = Result()
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for result in pool.imap_unordered(simulate_waba, jobs, chunksize=4):
            total.add(result)
    elapsed = time.perf_counter() - started
    p = params(args.idle_weight)
    print(f"fleet: {args.channels} channels in {len(sizes)} WABAs (largest {max(sizes)}, "
          f"{sum(1 for s in sizes if s > 100)} over 100, "
          f"{sum(1 for s in sizes if waba_bound(s, p))} WABA-bound); {args.days} days; "
          f"idle weight {p.idle_weight} after {args.idle_after or default('idle_after_polls')} "
          f"polls, margin {p.margin}, balances share usage budgets: "
          f"{p.balance_shares_usage}")
    print(f"calls: {total.calls:,} usage ({total.close_outs:,} close-outs), "
          f"{total.balance_calls:,} channel balance; slots {total.slots_taken:,} used, "
          f"{total.slots_idle:,} unused; {total.flips:,} idle/busy flips")
    for kind, count in total.violations.items():
        print(f"violations, {kind} windows: {count} in {total.windows_checked[kind]:,} calls")
    print(f"mean data age / best, all time:        {total.age / total.best_age:.4f}")
    print(f"mean data age / best, WABA-bound only: {total.bound_age / total.bound_best:.4f}")
    others = ((total.active_age - total.bound_active_age)
              / (total.active_best - total.bound_active_best))
    print(f"mean data age / best, while traffic:   {total.active_age / total.active_best:.4f}"
          f" (WABA-bound only: {total.bound_active_age / total.bound_active_best:.4f}; "
          f"the others: {others:.4f})")
    print(f"first round: {total.first_poll_within_60s:,} of {args.channels:,} channels polled "
          f"within 60 s of the start, the last {total.first_poll_latest:.0f} s after it")
    print(f"simulation: {elapsed:.1f} s on {args.workers} workers")


if __name__ == "__main__":
    main()
