"""The async shell of backfill: one past range at a time, charged like any live call, at the
lowest priority (see `plan` for the rule), kept in the state file as it lands.

While it has work, the live plan runs one call per channel-window short (and a twentieth of
each WABA's budget), so a channel whose own budget binds still leaves backfill a call an hour;
once every range is in, the live plan gets its whole budget back. It starts one usage window
after the exporter did, so the first round of live polls, which bunches calls at start, has left
every window before the past takes its share.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog

from exporter.api.client import PartnerApi
from exporter.api.errors import ApiError, ClientError
from exporter.backfill.history import (
    DONE,
    UNAVAILABLE,
    History,
    month_from_report,
)
from exporter.backfill.plan import Range, jobs, live_calls, next_room, wanted_ranges
from exporter.clock import Clock, to_ms
from exporter.domain import Limit
from exporter.polling import ledger as budget
from exporter.polling.ledger import Ledger, Scope
from exporter.polling.schedule import ChannelPlan
from exporter.polling.store import Store
from exporter.retry import backoff

log = structlog.get_logger("exporter.backfill")

RETRY_BASE_SECONDS = 60.0
RETRY_CAP_SECONDS = 3600.0
IDLE_SECONDS = 60.0  # the longest sleep: new channels and plan changes are noticed within it


CHANNEL_RESERVE = 1  # calls per channel-window the live plan leaves while backfill has work


class LivePlan(Protocol):
    """What backfill reads of the live poller: its channels per WABA and their intervals."""

    @property
    def plans(self) -> Mapping[str, ChannelPlan]: ...

    def wabas(self) -> Mapping[str, Sequence[str]]: ...

    def waba_label(self, waba: str) -> str: ...

    def reserve(self, usage_channel: int, usage_waba: int) -> None: ...


class Backfill:
    def __init__(self, *, api: PartnerApi, store: Store, ledger: Ledger, history: History,
                 clock: Clock, live: LivePlan, months: int, usage_channel: Limit,
                 usage_waba: Limit, balance_shares_usage: bool,
                 start_delay: float | None = None) -> None:
        self.api = api
        self.store = store
        self.ledger = ledger
        self.history = history
        self.clock = clock
        self.live = live
        self._limits = {budget.USAGE_CHANNEL: usage_channel, budget.USAGE_WABA: usage_waba}
        self._balance_shares = balance_shares_usage
        self._waba_reserve = max(1, usage_waba.count // 20)
        now = clock.now()
        self.anchor = history.anchor(now)  # when history ends: kept in the state file
        self.ranges: list[Range] = wanted_ranges(self.anchor, months)
        self.states = history.states()
        self._start_at = now + (usage_channel.window_seconds if start_delay is None
                                else start_delay)
        # Backfill calls per scope, for its share; restored from the state file.
        self._calls: dict[Scope, list[int]] = defaultdict(list)
        window_ms = max(limit.window_ms for limit in self._limits.values())
        for channel_id, waba, t_ms in history.calls_since(to_ms(now) - window_ms):
            self._calls[(budget.USAGE_CHANNEL, channel_id)].append(t_ms)
            self._calls[(budget.USAGE_WABA, waba)].append(t_ms)
        self._failures: dict[tuple[str, int], int] = {}
        self._not_before: dict[tuple[str, int], float] = {}
        self.calls = 0
        self._reserved = bool(self.ranges)
        if self._reserved:
            live.reserve(CHANNEL_RESERVE, self._waba_reserve)

    # -- progress --------------------------------------------------------------------------------

    def waba_progress(self, ids: Sequence[str]) -> tuple[int, int, int]:
        """Of one WABA's channels: months wanted, fetched, not available from the API."""
        done = unavailable = 0
        for ch in ids:
            for r in self.ranges:
                state = self.states.get((ch, r.month_start))
                if state is not None:
                    done += state == DONE
                    unavailable += state == UNAVAILABLE
        return len(ids) * len(self.ranges), done, unavailable

    def progress(self) -> list[tuple[str, int, int, int]]:
        """Per WABA label: (label, months wanted, fetched, not available from the API)."""
        return [(self.live.waba_label(waba), *self.waba_progress(ids))
                for waba, ids in sorted(self.live.wabas().items())]

    @property
    def complete(self) -> bool:
        """Every planned channel's history is in (or refused); False before discovery."""
        progress = self.progress()
        return bool(progress) and all(done + unavailable == wanted
                                      for _, wanted, done, unavailable in progress)

    # -- the work --------------------------------------------------------------------------------

    def _live_calls(self, kind: str, ids: Sequence[str]) -> int:
        """The live plan's calls per window, in a scope of budget `kind` that the channels
        `ids` charge (their usage polls, and their balance calls where those share it)."""
        intervals: list[float] = []
        for ch in ids:
            plan = self.live.plans.get(ch)
            if plan is None:
                continue
            intervals.append(plan.usage_interval)
            if self._balance_shares and plan.balance_interval is not None:
                intervals.append(plan.balance_interval)
        return live_calls(self._limits[kind].window_seconds, intervals)

    def _waba_live(self, waba: str) -> int:
        return self._live_calls(budget.USAGE_WABA, self.live.wabas().get(waba, ()))

    def _room(self, waba: str, channel_id: str, now_ms: int, waba_live: int) -> int:
        """When a backfill call for the channel fits both its share and the ledger; -1: never
        while the plan stays as it is. `waba_live` is `_waba_live(waba)`, worked out once per
        WABA by the caller (it sums over all the WABA's channels)."""
        scopes = ((budget.USAGE_CHANNEL, channel_id), (budget.USAGE_WABA, waba))
        live = {budget.USAGE_CHANNEL: self._live_calls(budget.USAGE_CHANNEL, [channel_id]),
                budget.USAGE_WABA: waba_live}
        at = next_room(self._limits, live,
                       {kind: self._calls.get((kind, key), []) for kind, key in scopes},
                       now_ms)
        if at < 0:
            return -1
        return max(at, self.ledger.next_slot(scopes, at))

    def _charge(self, waba: str, channel_id: str, now_ms: int) -> None:
        # The share's count first: over-counting it after a crash only slows the past down.
        self.history.record_call(channel_id, waba, now_ms)
        scopes = ((budget.USAGE_CHANNEL, channel_id), (budget.USAGE_WABA, waba))
        self.store.record_call(scopes, now_ms)
        self.ledger.record(scopes, now_ms)
        for scope in scopes:
            self._calls[scope].append(now_ms)
        self.calls += 1

    def _prune(self, now_ms: int) -> None:
        window_ms = max(limit.window_ms for limit in self._limits.values())
        for scope, calls in list(self._calls.items()):
            kept = [t for t in calls if t > now_ms - self._limits[scope[0]].window_ms]
            if kept:
                self._calls[scope] = kept
            else:
                del self._calls[scope]
        self.history.prune_calls(now_ms - window_ms)

    async def step(self) -> float:
        """Make at most one backfill call; return when there may be room for the next."""
        now = self.clock.now()
        if not self.ranges:
            return now + IDLE_SECONDS
        complete = self.complete
        if complete and self._reserved:
            self._reserved = False
            self.live.reserve(0, 0)
            log.info("backfill_complete", channels=sum(map(len, self.live.wabas().values())),
                     months=len(self.ranges), calls=self.calls)
        elif not complete and not self._reserved:  # discovery found channels with no history
            self._reserved = True
            self.live.reserve(CHANNEL_RESERVE, self._waba_reserve)
        if complete:
            return now + IDLE_SECONDS
        if now < self._start_at:
            return self._start_at
        now_ms = to_ms(now)
        self._prune(now_ms)
        waba_of = {ch: waba for waba, ids in self.live.wabas().items() for ch in ids}
        waba_live: dict[str, int] = {}
        wake = now + IDLE_SECONDS
        for channel_id, r in jobs(self.ranges, waba_of, set(self.states)):
            key = (channel_id, r.month_start)
            waiting = self._not_before.get(key, 0.0)
            if waiting > now:
                wake = min(wake, waiting)
                continue
            waba = waba_of[channel_id]
            if waba not in waba_live:
                waba_live[waba] = self._waba_live(waba)
            at = self._room(waba, channel_id, now_ms, waba_live[waba])
            if at != now_ms:
                if at > 0:
                    wake = min(wake, at / 1000)
                continue
            await self._fetch(waba, channel_id, r, now_ms)
            return self.clock.now()
        return wake

    async def _fetch(self, waba: str, channel_id: str, r: Range, now_ms: int) -> None:
        ch = self.store.channels.get(channel_id)
        if ch is None:
            return
        self._charge(waba, channel_id, now_ms)
        key = (channel_id, r.month_start)

        def may_retry() -> bool:  # another granularity spelling: charged the same way
            t_ms = to_ms(self.clock.now())
            if self._room(waba, channel_id, t_ms, self._waba_live(waba)) != t_ms:
                return False
            self._charge(waba, channel_id, t_ms)
            return True

        try:
            report = await self.api.channel_usage(
                ch.client_id, ch.id, r.month_start, r.end - 1, may_retry=may_retry,
                currency=self.store.billing_currency(ch))
        except ClientError as exc:
            if exc.status in (400, 404):
                # The API will not give this range: say so once and do not ask again.
                self.history.put_unavailable(channel_id, r.month_start, r.end,
                                             self.clock.now(), str(exc))
                self.states[key] = UNAVAILABLE
                log.warning("backfill_month_unavailable", channel_id=channel_id,
                            month_start=r.month_start, status=exc.status, detail=str(exc))
                return
            self._failed(key, exc)
            return
        except ApiError as exc:
            self._failed(key, exc)
            return
        self.history.put(month_from_report(channel_id, r.month_start, r.end, report),
                         self.clock.now())
        self.states[key] = DONE
        self._failures.pop(key, None)
        self._not_before.pop(key, None)
        self._log_waba_progress(waba)

    def _failed(self, key: tuple[str, int], exc: ApiError) -> None:
        n = self._failures[key] = self._failures.get(key, 0) + 1
        delay = backoff(n, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS)
        self._not_before[key] = self.clock.now() + delay
        log.warning("backfill_fetch_failed", channel_id=key[0], month_start=key[1],
                    kind=exc.kind, error=str(exc), retry_in_seconds=round(delay))

    def _log_waba_progress(self, waba: str) -> None:
        """A line when a WABA's history is complete, and at each tenth of the way."""
        wanted, done, unavailable = self.waba_progress(self.live.wabas().get(waba, ()))
        finished = done + unavailable
        if finished == wanted or finished % max(1, wanted // 10) == 0:
            log.info("backfill_progress", waba_id=self.live.waba_label(waba),
                     months_wanted=wanted, months_done=done, months_unavailable=unavailable)

    async def run(self) -> None:
        if not self.ranges:
            return
        log.info("backfill_started", months=len(self.ranges), anchor=self.anchor,
                 starts_in_seconds=round(max(0.0, self._start_at - self.clock.now())))
        while True:
            wake = await self.step()
            delay = min(IDLE_SECONDS, max(0.0, wake - self.clock.now()))
            if delay > 0:
                await self.clock.sleep(delay)
            else:
                await asyncio.sleep(0)
