"""The poller, the async shell of polling: it owns the task queue, the requests in flight and
what they write to the store. Each due task asks the ledger whether it may go, is charged to
it (on disk) before the request leaves, calls the API and stores what came back.

The decisions are elsewhere, pure: how often and when (schedule), what a call is charged to
and whether a close-out fits (charging), which channels are idle (activity), when a failure
is retried (backoff) and what this replica polls (sharding). A channel never polled goes at
once, in a first round its budgets have room for (schedule). Every task is one API request,
except discovery, which charges each page separately. Failures are retried, still through the
ledger; the store keeps serving the last good numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from exporter.api import models
from exporter.api.client import PartnerApi
from exporter.api.errors import ApiError, RateLimitError, ResponseError, TransportError
from exporter.calendar import day_start, month_start, reporting_month
from exporter.clock import Clock, to_ms
from exporter.config import Settings
from exporter.domain import Channel, Limit, MonthUsage, never_lower
from exporter.metrics.selfmetrics import SelfMetrics
from exporter.polling import ledger as budget
from exporter.polling.activity import Activity, activity_volume
from exporter.polling.backoff import (
    MIN_BACKOFF_SECONDS,
    retries_on_its_own,
    retries_soon,
    retry_delay,
    task_interval,
)
from exporter.polling.charging import close_out_room, scopes_for
from exporter.polling.diagnosis import Problem, discovery_problem
from exporter.polling.ledger import Ledger, Scope
from exporter.polling.outage import FAILURES_IN_A_ROW, Outage
from exporter.polling.schedule import (
    ChannelPlan,
    PlanParams,
    WabaSlots,
    balance_slot_gap,
    client_balance_interval,
    close_out_time,
    first_poll_times,
    grid_resumes,
    initial_phase,
    partner_balance_interval,
    plan_waba,
    slot_params,
    waba_bound,
)
from exporter.polling.sharding import Selection, ShardBudgets, owned_clients
from exporter.polling.store import Store
from exporter.polling.tasks import TaskKey, TaskKind

log = structlog.get_logger("exporter.poller")
_T = TypeVar("_T")

MAX_IDLE_SLEEP_SECONDS = 60.0
PRUNE_EVERY_SECONDS = 600.0


class Poller:
    def __init__(
        self,
        *,
        api: PartnerApi,
        store: Store,
        ledger: Ledger,
        clock: Clock,
        settings: Settings,
        budgets: ShardBudgets,
        metrics: SelfMetrics,
    ) -> None:
        self.api = api
        self.store = store
        self.ledger = ledger
        self.clock = clock
        self.settings = settings
        self.budgets = budgets
        self.metrics = metrics
        self.selection = Selection(settings)
        self._params = PlanParams(
            usage_channel=budgets.usage_channel,
            usage_waba=budgets.usage_waba,
            channel_balance=budgets.channel_balance,
            balance_shares_usage=settings.channel_balance_shares_usage_budget,
            margin=settings.safety_margin,
            idle_weight=settings.idle_weight,
        )
        self._heap: list[tuple[float, int, TaskKey]] = []
        self._due: dict[TaskKey, float] = {}
        self._seq = itertools.count()
        self._inflight: dict[TaskKey, asyncio.Task[None]] = {}
        self._sem = asyncio.Semaphore(settings.max_concurrent_requests)
        self._wake = asyncio.Event()
        self._failures: dict[TaskKey, int] = defaultdict(int)
        self._outage = Outage()
        metrics.polling()
        # Fleet shape for this replica, derived from the store's discovery.
        self.plans: dict[str, ChannelPlan] = {}
        self._wabas: dict[str, list[str]] = {}
        self._activity = Activity(settings.idle_after_polls)
        # WABAs whose own budget binds poll on a slot grid instead of per-channel timers (which
        # drift together and burst): one call per slot, given to a channel by stride scheduling.
        self._slots: dict[str, WabaSlots] = {}
        # Channel balance calls sharing a slotted WABA's budget wait here for its next slot.
        self._balances_due: dict[str, list[str]] = defaultdict(list)
        self._last_balance_slot: dict[str, int] = {}  # WABA -> when a balance last took a slot
        self._waba_labels: dict[str, str] = {}  # 360dialog WABA id -> the waba_id label
        # Slotted WABAs in a first round: the grid's own next slot when the round began, the
        # earliest it resumes after it.
        self._round_grid: dict[str, float] = {}
        # Channels on their own timers whose first poll is due: how much later than their
        # interval their second poll goes, so the first round ends spread out; and, once the
        # first is done, when the second is due (kept on disk: a restart keeps the spread).
        self._settle: dict[str, float] = {}
        self._second_polls: dict[str, float] = store.second_polls()
        self._clients: list[str] = []
        self._next_prune = clock.now()
        self._day = day_start(clock.now())
        self._reporting = reporting_month(clock.now(), settings.month_grace_seconds)
        self.discovered_once = store.get_meta("last_discovery") is not None
        self.discovery_problem: Problem | None = None  # why the last discovery failed
        self.ledger.load(store.ledger_rows())
        self._restore_activity()
        self._apply_fleet(list(store.channels.values()), initial=True)
        self._schedule(
            (TaskKind.DISCOVERY, ""),
            self.clock.now() if not self.discovered_once else self._next_discovery_time(),
        )

    def _restore_activity(self) -> None:
        """Plans survive restarts like budgets do: idle channels stay idle until they move."""
        month = reporting_month(self.clock.now(), self.settings.month_grace_seconds)
        volumes = {ch_id: activity_volume(current) for ch_id, usage in self.store.usage.items()
                   if (current := usage.months.get(month)) is not None}
        self._activity.restore(json.loads(self.store.get_meta("idle_channels") or "[]"), volumes)

    # -- schedule bookkeeping --------------------------------------------------------------------

    def _schedule(self, key: TaskKey, when: float) -> None:
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        self._wake.set()

    def _unschedule(self, key: TaskKey) -> None:
        self._due.pop(key, None)

    def next_due(self) -> float | None:
        """When the next task may start: the most overdue one's time, and while the API does
        not answer, not before its next probe."""
        while self._heap:
            when, _, key = self._heap[0]
            if self._due.get(key) == when:
                return max(when, self._outage.next_probe) if self._outage.down else when
            heapq.heappop(self._heap)
        return None

    def _next_discovery_time(self) -> float:
        last = float(self.store.get_meta("last_discovery") or 0)
        return max(self.clock.now(), last + self.settings.discovery_interval_seconds)

    # -- fleet and plan --------------------------------------------------------------------------

    def _apply_fleet(self, channels: Sequence[Channel], *, initial: bool = False) -> None:
        now = self.clock.now()
        mine = [c for c in channels if self.selection.wanted(c) and self.selection.owns(c)]
        wabas: dict[str, list[str]] = defaultdict(list)
        for ch in sorted(mine, key=lambda c: c.id):
            wabas[ch.waba_id or ch.id].append(ch.id)
            self._waba_labels[ch.waba_id or ch.id] = ch.waba_label
        known = set(self.plans)
        self._wabas = dict(wabas)
        self.plans = {}
        for ids in self._wabas.values():
            self.plans.update(plan_waba(ids, self._activity.idle, self._params))
        for gone in known - set(self.plans):
            for kind in (TaskKind.USAGE, TaskKind.CHANNEL_BALANCE, TaskKind.CLOSE_OUT):
                self._unschedule((kind, gone))
            self._activity.drop(gone)
            self._settle.pop(gone, None)
            self._drop_second_poll(gone)
        for waba in set(self._slots) - set(self._wabas):
            del self._slots[waba]
            self._round_grid.pop(waba, None)
            self._unschedule((TaskKind.SLOT, waba))
            self._balances_due.pop(waba, None)
        for w_index, (waba, ids) in enumerate(self._wabas.items()):
            if waba_bound(len(ids), self._params):
                self._use_slots(waba, ids, now + initial_phase(
                    w_index, len(self._wabas), slot_params(self._params).spacing))
            elif self._slots.pop(waba, None) is not None:
                self._unschedule((TaskKind.SLOT, waba))
                self._round_grid.pop(waba, None)
                for ch_id in self._balances_due.pop(waba, []):
                    # Back on their own timers.
                    self._schedule((TaskKind.CHANNEL_BALANCE, ch_id), now)
            for index, ch_id in enumerate(ids):
                plan = self.plans[ch_id]
                if waba not in self._slots and not self._usage_scheduled(ch_id):
                    usage = self.store.usage.get(ch_id)
                    if usage is not None:
                        # Known from before a restart: resume the cadence where it was (pulling
                        # it forward would burst). An overdue channel keeps its true, past due
                        # time, so the most overdue goes first.
                        due = self._second_polls.get(
                            ch_id, usage.fetched_at + plan.usage_interval)
                    else:
                        due, self._settle[ch_id] = first_poll_times(
                            now, index, len(ids), plan.usage_interval)
                    self._schedule((TaskKind.USAGE, ch_id), due)
                if plan.balance_interval is not None and (ch_id not in known or initial):
                    b_phase = initial_phase(index, len(ids), plan.balance_interval)
                    b_due = now + b_phase + plan.usage_interval / 2
                    fetched = self.store.balance_fetched_at.get(("channel", ch_id))
                    if fetched is not None:
                        b_due = fetched + plan.balance_interval
                    self._schedule((TaskKind.CHANNEL_BALANCE, ch_id), b_due)
        self._plan_clients(now)
        partner: TaskKey = (TaskKind.PARTNER_BALANCE, "")
        if self.budgets.partner_balance is not None and partner not in self._due:
            self._schedule(partner, now)
        self.metrics.discovered.labels("channels").set(len(self.plans))
        self.metrics.discovered.labels("wabas").set(len(self._wabas))

    def _plan_clients(self, now: float) -> None:
        all_selected = [c for c in self.store.channels.values() if self.selection.wanted(c)]
        owned = owned_clients(
            sorted({c.client_id for c in all_selected}), self.budgets.client_balance,
            self.settings.limit_client_balance,
            per_client=self.settings.client_balance_scope == "client",
            shard_count=self.settings.shard_count, shard_index=self.settings.shard_index)
        for gone in set(self._clients) - set(owned):
            self._unschedule((TaskKind.CLIENT_BALANCE, gone))
        interval = self._client_interval(len(owned))
        for index, client_id in enumerate(owned):
            if (TaskKind.CLIENT_BALANCE, client_id) not in self._due:
                due = now + initial_phase(index, len(owned), interval)
                fetched = self.store.balance_fetched_at.get(("client", client_id))
                if fetched is not None:
                    due = fetched + interval
                self._schedule((TaskKind.CLIENT_BALANCE, client_id), due)
        self._clients = owned
        self.metrics.discovered.labels("clients").set(len(owned))

    def _client_interval(self, n_clients: int) -> float:
        return client_balance_interval(
            self.budgets.client_balance, n_clients,
            floor=self.settings.client_balance_interval_seconds,
            shared=self.settings.client_balance_scope == "partner",
            margin=self.settings.safety_margin)

    def _usage_scheduled(self, channel_id: str) -> bool:
        key: TaskKey = (TaskKind.USAGE, channel_id)
        return key in self._due or key in self._inflight

    def _use_slots(self, waba: str, ids: Sequence[str], first_slot: float) -> None:
        """Put a WABA-bound WABA on its slot grid (or update its channels)."""
        params = slot_params(self._params)
        slots = self._slots.get(waba)
        if slots is None:
            slots = self._slots[waba] = WabaSlots(params, self.settings.idle_weight)
        slots.params = params
        fetched = {ch: u.fetched_at for ch in ids if (u := self.store.usage.get(ch))}
        slots.set_channels(ids, self._activity.idle, fetched)
        for ch_id in ids:
            # It had its own timer while the WABA was small.
            self._unschedule((TaskKind.USAGE, ch_id))
            self._settle.pop(ch_id, None)
            self._drop_second_poll(ch_id)
        due = self._due.get((TaskKind.SLOT, waba))
        if due is None:
            # A new grid (a start, or the WABA just grew past its channels' budgets) goes no
            # earlier than the calls its windows still see allow: after a restart, those of
            # the run before, which may have been a first round.
            now_ms = to_ms(self.clock.now())
            first_slot = max(first_slot, grid_resumes(
                self.ledger.calls((budget.USAGE_WABA, waba), now_ms), now_ms,
                to_ms(params.spacing)) / 1000)
        if slots.never_called() and waba not in self._round_grid:
            # A first round polls them at once (`_first_calls`); the grid resumes after it, no
            # earlier than this slot of its own.
            self._round_grid[waba] = first_slot if due is None else due
            self._schedule((TaskKind.SLOT, waba), self.clock.now())
        elif due is None:
            self._schedule((TaskKind.SLOT, waba), first_slot)

    def _slotted(self, channel_id: str) -> bool:
        return self._waba_of(channel_id) in self._slots

    def _waba_of(self, channel_id: str) -> str:
        ch = self.store.channels.get(channel_id)
        return (ch.waba_id or ch.id) if ch is not None else ""

    def _balance_slotted(self, channel_id: str) -> bool:
        return self.settings.channel_balance_shares_usage_budget and self._slotted(channel_id)

    def _slot_to_balance(self, waba: str, now_ms: int) -> bool:
        """Give this slot to the balance call waiting longest, if its budgets have room and
        the WABA's balance calls are not ahead of their share (`balance_slot_gap`)."""
        waiting = self._balances_due.get(waba)
        ids = self._wabas.get(waba, [])
        interval = self.plans[ids[0]].balance_interval if ids else None
        if waiting and interval is not None and now_ms < self._last_balance_slot.get(
                waba, -1) + to_ms(balance_slot_gap(interval, len(ids), self._params.margin)):
            return False
        while waiting:
            key: TaskKey = (TaskKind.CHANNEL_BALANCE, waiting[0])
            scopes = self._charge(key)
            if scopes is None or key in self._inflight:
                waiting.pop(0)  # gone, or already on its way
                continue
            if not self.ledger.allows(scopes, now_ms):
                return False  # no room for it now: a usage poll takes the slot
            waiting.pop(0)
            self._last_balance_slot[waba] = now_ms
            self._inflight[key] = asyncio.create_task(self._run(key, scopes))
            return True
        return False

    def _slot(self, waba: str, now: float) -> None:
        """A WABA's slot: the next one is due a spacing after this one went. Counting from when
        it went, not from when it was due, means a late slot never makes the next one early: a
        grid that catches up after the event loop stalls sends bursts. The ledger has the last
        word on every scope."""
        slots = self._slots.get(waba)
        if slots is None:
            return
        now_ms = to_ms(now)
        waba_scope: Scope = (budget.USAGE_WABA, waba)
        if not self.ledger.allows([waba_scope], now_ms):
            self.metrics.deferred.labels(budget.USAGE_WABA).inc()
            self._schedule((TaskKind.SLOT, waba),
                           self.ledger.next_slot([waba_scope], now_ms) / 1000)
            return
        if waba in self._round_grid and self._first_calls(waba, slots, now):
            return
        spacing = slots.params.spacing
        self._schedule((TaskKind.SLOT, waba), now + spacing)
        if self._slot_to_balance(waba, now_ms):
            return

        def may_go(ch_id: str) -> bool:
            scopes = self._charge((TaskKind.USAGE, ch_id))
            return (scopes is not None and (TaskKind.USAGE, ch_id) not in self._inflight
                    and self.ledger.allows(scopes, now_ms))

        ch_id = slots.take(now, may_go)
        if ch_id is not None:
            scopes = self._charge((TaskKind.USAGE, ch_id))
            assert scopes is not None
            self._inflight[(TaskKind.USAGE, ch_id)] = asyncio.create_task(
                self._run((TaskKind.USAGE, ch_id), scopes))

    def _first_calls(self, waba: str, slots: WabaSlots, now: float) -> bool:
        """A slotted WABA's first round: its never-called channels go now, as many as its
        window has room for and as may run at once, each charged before its task starts so
        the next round's room counts it. The grid then resumes where the calls its windows
        can see leave it room (`grid_resumes`), never earlier than its own next slot. False
        when the slot is then an ordinary one (nothing went, and the grid is due)."""
        now_ms = to_ms(now)
        waba_scope: Scope = (budget.USAGE_WABA, waba)
        room = min(self.ledger.limit(budget.USAGE_WABA).count
                   - self.ledger.used(waba_scope, now_ms),
                   self.settings.max_concurrent_requests - len(self._inflight))

        def may_go(ch_id: str) -> bool:
            scopes = self._charge((TaskKind.USAGE, ch_id))
            return (scopes is not None and (TaskKind.USAGE, ch_id) not in self._inflight
                    and self.ledger.allows(scopes, now_ms))

        chosen = slots.take_first(now, max(room, 0), may_go)
        for ch_id in chosen:
            key: TaskKey = (TaskKind.USAGE, ch_id)
            scopes = self._charge(key)
            assert scopes is not None
            if self._try_charge(key, scopes):
                self._inflight[key] = asyncio.create_task(self._run(key, scopes, charged=True))
        if chosen and len(chosen) == room and slots.never_called():
            # More to go once a request ends (this slot comes back at once, and waits in the
            # heap while the requests in flight are at their maximum).
            self._schedule((TaskKind.SLOT, waba), now)
            return True
        own_slot = self._round_grid.pop(waba)
        resumes = max(own_slot, grid_resumes(self.ledger.calls(waba_scope, now_ms), now_ms,
                                             to_ms(slots.params.spacing)) / 1000)
        if chosen or resumes > now:
            self._schedule((TaskKind.SLOT, waba), resumes)
            return True
        return False  # nothing went and the grid is due: this slot is the grid's own

    def _replan_waba(self, waba: str) -> None:
        # New intervals apply from each channel's next poll on: pulling polls forward here
        # would burst into a WABA budget that is already nearly all planned.
        self.plans.update(
            plan_waba(self._wabas.get(waba, []), self._activity.idle, self._params))

    # -- charges ---------------------------------------------------------------------------------

    def _charge(self, key: TaskKey) -> tuple[Scope, ...] | None:
        kind, id_ = key
        return scopes_for(
            kind, id_, waba=self._planned_waba(id_),
            balance_shares_usage=self.settings.channel_balance_shares_usage_budget,
            client_balance_per_client=self.settings.client_balance_scope == "client")

    def _planned_waba(self, channel_id: str) -> str | None:
        """The channel's WABA key, if the channel is known and planned here."""
        ch = self.store.channels.get(channel_id)
        if ch is None or channel_id not in self.plans:
            return None
        return ch.waba_id or ch.id

    def _close_out_room(self, scopes: Sequence[Scope], now: float) -> bool:
        return close_out_room(
            self.ledger, scopes, to_ms(now),
            balance_shares_usage=self.settings.channel_balance_shares_usage_budget,
            polls_channel_balances=self.budgets.channel_balance is not None)

    def _try_charge(self, key: TaskKey, scopes: Sequence[Scope]) -> bool:
        """Record the call in the ledger and on disk if every budget has room; else defer it."""
        now_ms = to_ms(self.clock.now())
        slot = self.ledger.next_slot(scopes, now_ms)
        if slot > now_ms:
            full = next(s[0] for s in scopes if not self.ledger.allows([s], now_ms))
            self.metrics.deferred.labels(full).inc()
            self._schedule(key, slot / 1000)
            return False
        self.store.record_call(scopes, now_ms)  # on disk before the request leaves
        self.ledger.record(scopes, now_ms)
        return True

    # -- the loop --------------------------------------------------------------------------------

    async def tick(self) -> float | None:
        """Start the tasks that are due, up to `max_concurrent_requests` in flight; return when
        the next one is due. The rest wait in the heap, most overdue first, until a request
        ends: after a restart with a fleet overdue, one task per due call only queued on the
        semaphore, at the cost of a long stall and their memory."""
        now = self.clock.now()
        self._check_calendar(now)
        while not self.saturated():
            due = self.next_due()
            if due is None or due > now:
                break
            if not self._outage.may_start(now, len(self._inflight)):
                break  # the API does not answer: one call at a time
            _, _, key = heapq.heappop(self._heap)
            del self._due[key]
            if key[0] == TaskKind.SLOT:
                self._slot(key[1], now)
                continue
            if key in self._inflight:
                continue  # it reschedules itself when it finishes
            if key[0] == TaskKind.USAGE and self._slotted(key[1]):
                continue  # its WABA's slots poll it
            if key[0] == TaskKind.CHANNEL_BALANCE and self._balance_slotted(key[1]):
                waiting = self._balances_due[self._waba_of(key[1])]
                if key[1] not in waiting:
                    waiting.append(key[1])  # the WABA's next slot is its
                continue
            scopes = self._charge(key)
            if scopes is None:
                continue  # the channel is gone
            if key[0] == TaskKind.CLOSE_OUT:
                if ((TaskKind.USAGE, key[1]) in self._inflight
                        or not self._close_out_room(scopes, now)):
                    continue  # no room: the next regular poll closes the day instead
                self._inflight[key] = asyncio.create_task(self._run(key, scopes))
                continue
            if not self.ledger.allows(scopes, to_ms(now)):
                self._try_charge(key, scopes)  # defers and counts
                continue
            self._inflight[key] = asyncio.create_task(self._run(key, scopes))
        if now >= self._next_prune:
            # Forget calls no window can see any more, in memory and on disk.
            self._next_prune = now + PRUNE_EVERY_SECONDS
            self.ledger.prune(to_ms(now))
            self.store.prune_ledger(to_ms(now) - self.ledger.max_span_ms())
        return self.next_due()

    def saturated(self) -> bool:
        return len(self._inflight) >= self.settings.max_concurrent_requests

    def _waits_for_requests(self) -> bool:
        """Nothing may start before a request in flight ends (which wakes the loop): at the
        most requests at once, or while a probe of an API that does not answer is out."""
        return self.saturated() or (self._outage.down and bool(self._inflight))

    async def drain(self) -> None:
        """Wait for every request in flight (tests step the loop with tick() and drain())."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()))

    async def run(self) -> None:
        while True:
            self._wake.clear()
            nxt = await self.tick()
            if self._waits_for_requests():
                nxt = None  # what is due waits for a request to end, which wakes the loop
            delay = MAX_IDLE_SLEEP_SECONDS if nxt is None else nxt - self.clock.now()
            delay = min(max(delay, 0.0), MAX_IDLE_SLEEP_SECONDS)
            sleeper = asyncio.ensure_future(self.clock.sleep(delay))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
            if not self._inflight and delay == 0:
                await asyncio.sleep(0)

    def _check_calendar(self, now: float) -> None:
        day = day_start(now)
        if day > self._day:
            self._day = day
            self._start_close_out(day)
        reporting = reporting_month(now, self.settings.month_grace_seconds)
        if reporting != self._reporting:
            self._reporting = reporting
            log.info("month_switched", month_start=reporting)

    def _start_close_out(self, boundary: int) -> None:
        """Re-read every channel shortly after a UTC day ends, so the day's totals are final.

        Where the channel's own budget binds, the close-out takes the place of the channel's
        next regular poll (which is skipped; the cadence goes on from it), if its window has room
        at that moment. It spends no extra call, and moving one call earlier crowds no later
        window than the one the ledger checks now. A WABA whose shared budget binds polls on its
        slots: there the first poll after the delay closes the day, within one interval.
        """
        for waba, ids in self._wabas.items():
            for index, ch_id in enumerate(ids):
                at = close_out_time(boundary, self.settings.close_out_delay_seconds,
                                    index, len(ids))
                if waba not in self._slots:
                    self._schedule((TaskKind.CLOSE_OUT, ch_id), at)

    # -- tasks -----------------------------------------------------------------------------------

    async def _run(self, key: TaskKey, scopes: Sequence[Scope], *, charged: bool = False) -> None:
        """One task's request; `charged` when the caller has charged it already."""
        kind, id_ = key
        try:
            async with self._sem:
                if kind == TaskKind.DISCOVERY:
                    await self._discover(self.clock.now())
                    return
                if not charged and not self._try_charge(key, scopes):
                    return
                started = self.clock.now()
                try:
                    await self._call(kind, id_, started)
                except ApiError as exc:
                    self._heard(exc, started)
                    self._failed(key, exc)
                else:
                    self._heard(None, started)
                    self._failures.pop(key, None)
                    self._reschedule_after_success(key, started)
        except Exception:
            log.exception("poll_task_crashed", task=kind, id=id_)
            self._schedule(key, self.clock.now() + MIN_BACKOFF_SECONDS)
        finally:
            self._inflight.pop(key, None)
            self._wake.set()

    async def _call(self, kind: TaskKind, id_: str, now: float) -> None:
        if kind in (TaskKind.USAGE, TaskKind.CLOSE_OUT):
            await self._poll_usage(id_, now)
        elif kind == TaskKind.CHANNEL_BALANCE:
            ch = self.store.channels[id_]
            balance = await self.api.channel_balance(ch.client_id, ch.id)
            if balance is not None:  # None: an answer without an amount (the client logs it)
                self.store.put_channel_balance(ch.id, balance, now)
        elif kind == TaskKind.CLIENT_BALANCE:
            if (client_balance := await self.api.client_balance(id_)) is not None:
                self.store.put_client_balance(id_, client_balance, now)
        elif kind == TaskKind.PARTNER_BALANCE:
            self.store.put_partner_balances(await self.api.partner_balance(), now)

    async def _poll_usage(self, channel_id: str, now: float) -> None:
        ch = self.store.channels[channel_id]
        first = reporting_month(now, self.settings.month_grace_seconds)
        report = await self.api.channel_usage(
            ch.client_id, ch.id, first, int(now), may_retry=self._retry_charger(ch.id),
            currency=self.store.billing_currency(ch))
        months = models.aggregate_by_month(report, default_currency="")
        # Every month the request covered is authoritative, even when it came back empty.
        current = month_start(now)
        for month in {first, current}:
            months.setdefault(month, MonthUsage(month, report.currency))
        keep_from = month_start(first - 1)  # the month before: its series restart from zero
        stored = self.store.usage.get(ch.id)
        for month, usage in list(months.items()):
            before = stored.months.get(month) if stored is not None else None
            if before is not None:
                months[month], raised = never_lower(before, usage)
                if raised:
                    self.metrics.usage_decreases.inc(raised)
                    log.warning("usage_decrease_held", channel_id=ch.id, month=month,
                                totals=raised)
        self.store.put_usage(ch.id, months, now, keep_from)
        self._track_activity(ch, months[first])

    def _retry_charger(self, channel_id: str) -> Callable[[], bool]:
        """Charges the client's second usage request (another granularity spelling) to the
        scopes the first was charged to, if they have room now; on disk first, as `_try_charge`
        does. Without room the fetch fails, and its retry goes through the ledger."""
        def may_retry() -> bool:
            scopes = self._charge((TaskKind.USAGE, channel_id))
            now_ms = to_ms(self.clock.now())
            if scopes is None or not self.ledger.allows(scopes, now_ms):
                return False
            self.store.record_call(scopes, now_ms)
            self.ledger.record(scopes, now_ms)
            return True
        return may_retry

    def _track_activity(self, ch: Channel, usage: MonthUsage) -> None:
        if not self._activity.observe(ch.id, activity_volume(usage)):
            return
        idle = ch.id in self._activity.idle
        self._replan_waba(ch.waba_id or ch.id)
        slots = self._slots.get(ch.waba_id or ch.id)
        if slots is not None:
            slots.set_idle(ch.id, idle)
        self.store.set_meta("idle_channels", json.dumps(sorted(self._activity.idle)))
        log.debug("channel_activity_changed", channel_id=ch.id, idle=idle)

    def _reschedule_after_success(self, key: TaskKey, started: float) -> None:
        kind, id_ = key
        if kind in (TaskKind.USAGE, TaskKind.CLOSE_OUT):
            plan = self.plans.get(id_)
            if plan is None or self._slotted(id_):
                return
            regular = self._due.get((TaskKind.USAGE, id_))
            if kind == TaskKind.CLOSE_OUT and regular is not None:
                # It took the regular poll's place.
                self._schedule((TaskKind.USAGE, id_), regular + plan.usage_interval)
            elif id_ in self._settle:  # its first poll: the second spreads the round out
                due = started + plan.usage_interval + self._settle.pop(id_)
                self._second_polls[id_] = due
                self.store.put_second_poll(id_, due)
                self._schedule((TaskKind.USAGE, id_), due)
            else:
                self._drop_second_poll(id_)
                self._schedule((TaskKind.USAGE, id_), started + plan.usage_interval)
        elif kind == TaskKind.CHANNEL_BALANCE:
            plan = self.plans.get(id_)
            if plan is not None and plan.balance_interval is not None:
                self._schedule(key, started + plan.balance_interval)
        elif kind == TaskKind.CLIENT_BALANCE:
            if id_ in self._clients:
                self._schedule(key, started + self._client_interval(len(self._clients)))
        elif kind == TaskKind.PARTNER_BALANCE and self.budgets.partner_balance is not None:
            self._schedule(key, started + partner_balance_interval(
                self.budgets.partner_balance, self.settings.safety_margin))

    def _failed(self, key: TaskKey, exc: ApiError) -> None:
        kind, id_ = key
        self.metrics.api_errors.labels(exc.endpoint, exc.kind).inc()
        if not retries_on_its_own(kind, slotted=self._slotted(id_)):
            return
        self._failures[key] += 1
        attempt = self._failures[key]
        retry_after = None
        if isinstance(exc, RateLimitError):
            self.metrics.rate_limited.labels(exc.endpoint).inc()
            retry_after = exc.retry_after
            log.warning("api_rate_limited", task=kind, id=id_, retry_after=exc.retry_after,
                        note="a 429 means our plan was wrong; please report it")
        delay = retry_delay(attempt, self._task_interval(key), retry_after=retry_after,
                            retryable=retries_soon(kind, retryable=exc.retryable,
                                                   discovered_once=self.discovered_once))
        log.warning("api_call_failed", task=kind, id=id_, kind=exc.kind, error=str(exc),
                    attempt=attempt, retry_in_seconds=round(delay, 1))
        self._schedule(key, self.clock.now() + delay)

    def _heard(self, exc: ApiError | None, started: float) -> None:
        """What a call that started at `started` tells of the API as a whole: no HTTP answer
        (`TransportError`), or one of any status."""
        now = self.clock.now()
        if isinstance(exc, TransportError):
            if self._outage.unanswered(now, started):
                self.metrics.api_reachable.set(0)
                log.warning("api_unreachable", error=str(exc), calls_in_a_row=FAILURES_IN_A_ROW,
                            next_call_in_seconds=round(self._outage.next_probe - now, 1),
                            note="one call at a time until it answers; the last good numbers "
                            "are served meanwhile")
            return
        down_for = self._outage.answered(now)
        if down_for is not None:
            self.metrics.api_reachable.set(1)
            log.warning("api_reachable_again", down_seconds=round(down_for, 1))

    def _task_interval(self, key: TaskKey) -> float:
        kind, id_ = key
        return task_interval(
            kind, self.plans.get(id_), discovery=self.settings.discovery_interval_seconds,
            otherwise=self._client_interval(max(1, len(self._clients))))

    # -- discovery -------------------------------------------------------------------------------

    async def _discover(self, started: float) -> None:
        key: TaskKey = (TaskKind.DISCOVERY, "")
        try:
            clients = await self._all_pages(self.api.clients_page)
            channels = await self._all_pages(self.api.channels_page)
        except _Deferred:
            return
        except ApiError as exc:
            self._heard(exc, started)
            self._discovery_failed(exc)
            self._failed(key, exc)
            return
        self._heard(None, started)
        self._failures.pop(key, None)
        if self.discovery_problem is not None:
            log.info("discovery_recovered", partner_id=self.settings.partner_id)
            self.discovery_problem = None
        now = self.clock.now()
        channels = [c for c in channels if self.selection.wanted(c)]
        gone = self.store.set_discovery(clients, channels)
        self.store.set_meta("last_discovery", repr(now))
        self.discovered_once = True
        for ch_id in gone:
            self._activity.forget(ch_id)
        self._apply_fleet(channels)
        self.metrics.last_discovery.set(now)
        log.info("discovery_done", clients=len(clients), channels=len(channels),
                 polled_channels=len(self.plans), retired=len(gone))
        self._schedule(key, now + self.settings.discovery_interval_seconds)

    def _discovery_failed(self, exc: ApiError) -> None:
        """Say which setting is probably wrong: in the log once per change (each failure is
        logged as any failed call is), and in `/readyz` until a discovery succeeds."""
        problem = discovery_problem(
            exc, partner_id=self.settings.partner_id or "", api_url=self.settings.api_url,
            api_key=self.settings.api_key is not None)
        if problem != self.discovery_problem:
            log.error("discovery_failed", partner_id=self.settings.partner_id,
                      status=problem.status, setting=problem.setting, hint=problem.message)
        self.discovery_problem = problem

    def _drop_second_poll(self, channel_id: str) -> None:
        if self._second_polls.pop(channel_id, None) is not None:
            self.store.drop_second_poll(channel_id)

    def not_ready_reason(self) -> str:
        """Why `/readyz` says not ready (empty once a discovery has succeeded)."""
        if self.discovered_once:
            return ""
        if self.discovery_problem is not None:
            return f"discovery failed: {self.discovery_problem.message}"
        return "waiting for the first discovery"

    async def _all_pages(
        self, fetch: Callable[[int], Awaitable[models.Page[_T]]]
    ) -> list[_T]:
        """Every page of a listing, each page charged to the discovery budget."""
        key: TaskKey = (TaskKind.DISCOVERY, "")
        scopes = self._charge(key)
        assert scopes is not None
        items: list[_T] = []
        offset = 0
        total: int | None = None
        while True:
            if not self._try_charge(key, scopes):
                raise _Deferred
            page = await fetch(offset)
            if total is not None and page.total != total:
                # The fleet changed between pages: items shifted, so one may have been skipped.
                # Taking this listing would retire a channel that still exists; read it again.
                raise ResponseError("discovery", f"listing changed while paging ({total} then "
                                    f"{page.total}); it will be read again")
            total = page.total
            items.extend(page.items)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return items

    def waba_intervals(self) -> list[tuple[str, float]]:
        return [
            (self.waba_label(waba), min(self.plans[c].usage_interval for c in ids))
            for waba, ids in self._wabas.items() if ids
        ]

    def waba_label(self, waba: str) -> str:
        """Meta's WABA id where known: self-metrics join the usage series on it."""
        return self._waba_labels.get(waba, waba)

    def idle_channels(self) -> set[str]:
        return set(self._activity.idle)

    def budget_use(self) -> list[tuple[str, str, float]]:
        """The fullest window of each budget scope: per WABA for usage calls, partner-wide for
        the rest (those this shard owns)."""
        now_ms = to_ms(self.clock.now())
        rows: list[tuple[str, str, float]] = []
        for waba, channel_ids in self.wabas().items():
            label = self.waba_label(waba)
            rows.append((budget.USAGE_WABA, label,
                         self.ledger.max_used_ratio(budget.USAGE_WABA, [waba], now_ms)))
            rows.append((budget.USAGE_CHANNEL, label,
                         self.ledger.max_used_ratio(budget.USAGE_CHANNEL, channel_ids, now_ms)))
        for kind in (budget.CLIENT_BALANCE, budget.PARTNER_BALANCE, budget.DISCOVERY):
            with contextlib.suppress(KeyError):
                rows.append((kind, "", self.ledger.max_used_ratio(kind, ["partner"], now_ms)))
        return rows

    def wabas(self) -> dict[str, list[str]]:
        return self._wabas

    def reserve(self, usage_channel: int, usage_waba: int) -> None:
        """Plan live polls as if each channel's and each WABA's usage budget were this many
        calls per window smaller: the share backfill works in while it has work (0, 0 gives
        it back). Plans change at the next discovery, each channel's from its next poll."""
        full_channel, full_waba = self.budgets.usage_channel, self.budgets.usage_waba
        self._params = dataclasses.replace(
            self._params,
            usage_channel=Limit(max(1, full_channel.count - usage_channel),
                                full_channel.window_seconds),
            usage_waba=Limit(max(1, full_waba.count - usage_waba), full_waba.window_seconds))


class _Deferred(Exception):
    """A discovery page had to wait for budget; discovery resumes from scratch later."""

