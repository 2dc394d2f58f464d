"""The poller against the simulator with injected faults, changing fleets, filters and shards."""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import itertools
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from exporter.clock import FakeClock
from exporter.logging import configure
from exporter.polling.ledger import USAGE_CHANNEL
from exporter.simulator.app import SimulatedApi, UsageShape
from exporter.simulator.fleet import Fleet, build_fleet
from exporter.testing import Rig

START = calendar.timegm((2026, 5, 12, 9, 0, 0))
Fault = Callable[[httpx.Request], httpx.Response | None]


class FaultyTransport(httpx.AsyncBaseTransport):
    """The simulator over ASGI, with a hook that may answer instead of it."""

    def __init__(self, app, fault: Fault | None = None) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self.fault = fault
        self.faults_sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.fault is not None:
            answer = self.fault(request)
            if answer is not None:
                self.faults_sent += 1
                return answer
        return await self._inner.handle_async_request(request)


class FaultyRig(Rig):
    transport: FaultyTransport


def make_rig(tmp_path, fleet: Fleet | None = None, usage_shape: UsageShape | None = None,
             **settings) -> FaultyRig:
    clock = FakeClock(START)
    fleet = fleet or build_fleet(7, waba_sizes=(1, 3, 25), clients=2)
    sim = SimulatedApi(fleet, clock.now, token_ttl=900, usage_shape=usage_shape)
    return FaultyRig(fleet, sim, clock, tmp_path / "state.sqlite3",
                     transport=FaultyTransport(sim.app), **settings)


def series(samples, name, **labels):
    return {k: v for k, v in samples.get(name, {}).items()
            if all(dict(k).get(a) == b for a, b in labels.items())}


async def test_faults_keep_the_last_numbers_and_are_retried_within_budget(tmp_path):
    """With a channel failing in every way, its last numbers stay served, errors are counted by
    kind, no budget is exceeded, and the numbers catch up once the faults stop."""
    rig = make_rig(tmp_path)
    await rig.run_until(START + 3600)
    victim = rig.fleet.wabas()[1].channels[0]
    before = series(await rig.samples(), "whatsapp_messages_total", channel_id=victim.id)
    assert before
    kinds = [httpx.Response(500, text="boom"), httpx.Response(502), httpx.Response(503),
             httpx.Response(200, text='{"pricing_analytics": {"data": [{"data_po'),
             httpx.Response(200, json={"pricing_analytics": {"data_points": [
                 {"start": "yesterday", "volume": "lots"}]}})]
    count = {"n": 0}

    def fault(request: httpx.Request) -> httpx.Response | None:
        if f"/channels/{victim.id}/info/usage" not in request.url.path:
            return None
        count["n"] += 1
        if count["n"] % 6 == 0:
            raise httpx.ConnectError("connection reset")
        return kinds[count["n"] % 5]

    rig.transport.fault = fault
    await rig.run_until(START + 3 * 3600)
    during = await rig.samples()
    assert series(during, "whatsapp_messages_total", channel_id=victim.id) == before
    errors = series(during, "whatsapp_exporter_api_errors_total", endpoint="channel_usage")
    assert {dict(k)["kind"] for k in errors} >= {"server", "malformed", "transport"}
    assert rig.sim.rate_limited == 0
    assert count["n"] <= 10 * 2  # retried with backoff inside its 10/h budget, not hammered

    rig.transport.fault = None
    await rig.run_until(START + 4 * 3600)
    after = series(await rig.samples(), "whatsapp_messages_total", channel_id=victim.id)
    assert sum(after.values()) > sum(before.values())


async def test_a_429_is_honoured_and_counted(tmp_path):
    """A 429 with Retry-After is counted, and the channel is not asked again before it expires."""
    rig = make_rig(tmp_path)
    await rig.run_until(START + 600)
    victim = rig.fleet.wabas()[0].channels[0]
    asked: list[float] = []

    def fault(request: httpx.Request) -> httpx.Response | None:
        if f"/channels/{victim.id}/info/usage" in request.url.path:
            asked.append(rig.clock.now())
            if len(asked) == 1:
                return httpx.Response(429, headers={"Retry-After": "1800"},
                                      json={"meta": {"http_code": 429}})
        return None

    rig.transport.fault = fault
    await rig.run_until(START + 3 * 3600)
    assert len(asked) >= 2
    assert asked[1] - asked[0] >= 1800
    samples = await rig.samples()
    assert series(samples, "whatsapp_exporter_rate_limited_total",
                  endpoint="channel_usage") == {(("endpoint", "channel_usage"),): 1.0}


async def test_channels_that_disappear_are_retired(tmp_path):
    """After discovery stops listing a channel its series vanish and it is no longer polled."""
    rig = make_rig(tmp_path, discovery_interval_seconds=600)
    await rig.run_until(START + 1800)
    gone = rig.fleet.wabas()[1].channels[0]
    assert series(await rig.samples(), "whatsapp_channel_info", channel_id=gone.id)
    smaller = dataclasses.replace(rig.fleet, clients=tuple(
        dataclasses.replace(c, wabas=tuple(
            dataclasses.replace(w, channels=tuple(ch for ch in w.channels if ch.id != gone.id))
            for w in c.wabas))
        for c in rig.fleet.clients))
    rig.sim.fleet = smaller
    await rig.run_until(START + 3600)
    samples = await rig.samples()
    assert not series(samples, "whatsapp_channel_info", channel_id=gone.id)
    assert not series(samples, "whatsapp_messages_total", channel_id=gone.id)
    polled_at = len(rig.sim.requests)
    await rig.run_until(START + 3 * 3600)
    assert not any(f"/channels/{gone.id}/" in r.path for r in rig.sim.requests[polled_at:])


async def test_allow_and_deny_lists_narrow_what_is_polled(tmp_path):
    """Only allowed WABAs are polled, and a denied channel inside them is skipped."""
    fleet = build_fleet(7, waba_sizes=(1, 3, 25), clients=2)
    waba = fleet.wabas()[1]
    denied = waba.channels[0]
    rig = make_rig(tmp_path, fleet, allow_waba_ids=[waba.external_id],
                   deny_channel_ids=[denied.id])
    await rig.run_until(START + 3600)
    polled = {r.path.split("/channels/")[1].split("/")[0]
              for r in rig.sim.requests if "/info/usage" in r.path}
    assert polled == {ch.id for ch in waba.channels} - {denied.id}


async def test_shards_split_the_fleet_and_the_partner_budgets(tmp_path):
    """Two shards poll disjoint WABAs that together cover the fleet; only shard 0 polls the
    partner balance; client-balance budgets are split in whole calls."""
    fleet = build_fleet(7, waba_sizes=(1, 3, 8, 2, 5, 4), clients=3)
    polled = []
    for index in (0, 1):
        rig = make_rig(tmp_path / str(index), fleet, shard_count=2, shard_index=index)
        await rig.run_until(START + 1800)
        polled.append({r.path.split("/channels/")[1].split("/")[0]
                       for r in rig.sim.requests if "/info/usage" in r.path})
        partner = [r for r in rig.sim.requests if r.path.endswith(f"{fleet.partner_id}/balance")]
        assert bool(partner) == (index == 0)
        poller = rig.exporter.poller
        assert poller is not None
        assert poller.budgets.client_balance is not None
        assert poller.budgets.client_balance.count == 2  # 5 split over 2 shards
    assert not polled[0] & polled[1]
    assert polled[0] | polled[1] == {ch.id for ch in fleet.channels()}


async def test_bearer_tokens_are_renewed_without_a_401(tmp_path):
    """With username and password, tokens are renewed before they expire: no 401 ever."""
    rig = make_rig(tmp_path, api_key=None, username="demo@example.com",
                   password="demo-password")
    await rig.run_until(START + 2 * 3600)
    tokens = [r for r in rig.sim.requests if r.path.endswith("/token")]
    assert len(tokens) >= 3  # 900 s tokens over two hours
    assert not [r for r in rig.sim.requests if r.status == 401]
    assert series(await rig.samples(), "whatsapp_messages_total")


@pytest.mark.parametrize("scope", ["partner", "client"])
async def test_client_balances_are_polled_within_their_budget(tmp_path, scope):
    """Every client's balance is served, and 5 calls per 30 s is never exceeded."""
    rig = make_rig(tmp_path, client_balance_scope=scope)
    await rig.run_until(START + 1800)
    balances = series(await rig.samples(), "whatsapp_client_balance")
    assert {dict(k)["client_id"] for k in balances} == {c.id for c in rig.fleet.clients}
    assert rig.sim.rate_limited == 0


async def test_self_metrics_label_wabas_like_the_usage_series(tmp_path):
    """Budget use and poll intervals carry Meta's WABA id, the one usage series carry."""
    rig = make_rig(tmp_path)
    await rig.run_until(START + 900)
    samples = await rig.samples()
    usage_wabas = {dict(k)["waba_id"] for k in samples["whatsapp_channel_info"]}
    assert usage_wabas == {w.external_id for w in rig.fleet.wabas()}
    interval_wabas = {dict(k)["waba_id"]
                      for k in samples["whatsapp_exporter_poll_interval_seconds"]}
    budget_wabas = {dict(k)["waba_id"]
                    for k in series(samples, "whatsapp_exporter_budget_used_ratio",
                                    scope="usage_waba")}
    assert interval_wabas == budget_wabas == usage_wabas


async def test_secrets_never_reach_logs_or_metrics(tmp_path, capsys):
    """With debug logs, bearer auth, 401s and errors, neither password nor token is printed."""
    configure("json", "debug", secrets=["demo-password"])
    try:
        rig = make_rig(tmp_path, api_key=None, username="demo@example.com",
                       password="demo-password")
        rig.transport.fault = lambda r: (httpx.Response(401, json={"meta": {}})
                                         if r.url.path.endswith("/balance") else None)
        await rig.run_until(START + 1800)
        body = (await rig.scrape()).text
    finally:
        configure("console", "warning")
    logs = capsys.readouterr().err
    assert '"event": "api_call"' in logs  # debug logging really was on
    tokens = [r for r in rig.sim.requests if r.path.endswith("/token")]
    assert tokens
    for text in (logs, body):
        assert "demo-password" not in text
        assert "Bearer" not in text
        assert "eyJ" not in text  # no JWT fragment


async def test_the_ledger_on_disk_keeps_only_what_a_window_can_see(tmp_path):
    """Old ledger rows are pruned from SQLite, so the state file does not grow without bound."""
    rig = make_rig(tmp_path)
    await rig.run_until(START + 6 * 3600)
    rows = rig.exporter.store.ledger_rows()
    oldest = min(t for _, _, t in rows) / 1000
    assert rig.clock.now() - oldest <= 3600 + 2 + 600  # longest window, guard, prune period
    assert len(rows) < len(rig.sim.requests) * 2 / 3


async def test_a_lower_month_total_is_held_so_counters_never_go_down(tmp_path):
    """When the API reports lower month totals (a downward revision), the exposed counters keep
    their old values within the month, and the holds are counted."""
    rig = make_rig(tmp_path)
    await rig.run_until(START + 1800)
    before = (await rig.samples())["whatsapp_messages_total"]
    assert sum(before.values()) > 0
    empty = {"currency": "USD", "granularity": "daily", "pricing_analytics": {"data": []},
             "call_analytics": {"data": []}}
    rig.transport.fault = lambda r: (httpx.Response(200, json=empty)
                                     if r.url.path.endswith("/info/usage") else None)
    await rig.run_until(START + 3600)
    held = await rig.samples()
    assert rig.transport.faults_sent > 0
    for key, value in before.items():
        assert held["whatsapp_messages_total"][key] >= value, key
    assert sum(held["whatsapp_exporter_usage_decreases_total"].values()) > 0
    rig.transport.fault = None
    await rig.run_until(START + 5400)
    after = (await rig.samples())["whatsapp_messages_total"]
    assert sum(after.values()) > sum(held["whatsapp_messages_total"].values())


async def test_an_overdue_fleet_starts_no_more_requests_than_may_run_at_once(tmp_path):
    """After an outage every channel is due at once. The poller keeps at most
    max_concurrent_requests requests in flight and leaves the rest due, instead of starting a
    waiting task per channel; every channel is polled again all the same."""
    rig = make_rig(tmp_path, build_fleet(7, waba_sizes=(1, 3, 25, 6, 6), clients=2),
                   max_concurrent_requests=3)
    await rig.run_until(START + 3600)
    back = START + 6 * 3600
    rig.clock.set(back)
    await rig.restart()
    poller = rig.exporter.poller
    assert poller is not None
    before = asyncio.all_tasks()
    await poller.tick()
    started = asyncio.all_tasks() - before
    assert len(started) == 3
    assert poller.saturated()
    due = poller.next_due()  # the rest wait their turn
    assert due is not None
    assert due <= back
    await rig.run_until(back + 900)
    updated = (await rig.samples())["whatsapp_usage_updated_timestamp_seconds"]
    assert len(updated) == len(rig.fleet.channels()) == 41
    assert min(updated.values()) >= back


async def test_a_refused_granularity_spelling_is_retried_on_the_budget(tmp_path):
    """Against an API that takes only lower-case granularity spellings, the exporter settles
    on the lower-case one, every usage request it made (the second spellings too) is in its
    ledger, and the API never had to refuse one for its rate limit."""
    rig = make_rig(tmp_path, usage_shape=UsageShape(legacy=True), max_concurrent_requests=4)
    await rig.run_until(START + 1800)
    assert rig.exporter.api is not None
    assert rig.exporter.api.granularity == "daily"
    usage = [r for r in rig.sim.requests if r.path.endswith("/info/usage")]
    assert any(r.status == 400 for r in usage)
    # A channel balance call is charged to the channel's usage budget too (the default).
    sent = Counter(r.path.split("/")[-3] for r in rig.sim.requests if "/channels/" in r.path)
    charged = Counter(key for kind, key, _ in rig.exporter.store.ledger_rows()
                      if kind == USAGE_CHANNEL)
    assert sent == charged
    assert rig.sim.rate_limited == 0
    assert len(series(await rig.samples(), "whatsapp_messages_total")) > 0


async def test_after_a_restart_the_first_poll_takes_the_currency_from_the_stored_balances(
        tmp_path):
    """Meta's usage answer names no currency: after a restart, before any balance is read
    again, the first poll of each channel still prices its cost in the currency of the stored
    channel (or client) balance."""
    rig = make_rig(tmp_path)
    await rig.run_until(START + 3 * 3600)
    currencies = {c.currency for c in rig.fleet.clients}
    assert all(currencies)
    await rig.restart()
    # No balance is read again: the currency can only come from the state file.
    rig.transport.fault = lambda r: (httpx.Response(503) if "balance" in r.url.path else None)
    restarted = rig.clock.now()
    await rig.run_until(restarted + 1200)
    assert rig.transport.faults_sent > 0
    updated = (await rig.samples())["whatsapp_usage_updated_timestamp_seconds"]
    assert min(updated.values()) >= restarted  # every channel polled since the restart
    costs = (await rig.samples())["whatsapp_cost_total"]
    assert costs
    assert {dict(k)["currency"] for k in costs} <= currencies


async def test_an_api_that_does_not_answer_is_asked_one_call_at_a_time(tmp_path):
    """Connections refused for half an hour: after a few calls in a row without an answer the
    poller sends one call at a time, further and further apart, instead of every task backing
    off on its own; the last numbers stay served, the outage shows in a gauge and the log, and
    once the API answers every channel is polled again."""
    import structlog.testing  # noqa: PLC0415

    rig = make_rig(tmp_path, build_fleet(7, waba_sizes=(1, 3, 25, 6, 6), clients=2))
    await rig.run_until(START + 3600)
    before = series(await rig.samples(), "whatsapp_messages_total")
    assert (await rig.samples())["whatsapp_exporter_api_reachable"] == {(): 1.0}
    asked: list[float] = []

    def refused(request: httpx.Request) -> httpx.Response | None:
        asked.append(rig.clock.now())
        raise httpx.ConnectError("connection refused")

    rig.transport.fault = refused
    with structlog.testing.capture_logs() as logs:
        await rig.run_until(START + 3600 + 1800)
        during = await rig.samples()
        assert during["whatsapp_exporter_api_reachable"] == {(): 0.0}
        assert series(during, "whatsapp_messages_total") == before  # the last numbers stay
        # What was in flight when it went down, then one probe at a time: 5, 10, 20 ... s apart,
        # at most two minutes. Each task on its own backoff sent hundreds in the half hour.
        probes = [t for t in asked if t > asked[0] + 1]
        assert len(asked) - len(probes) <= 8 + 2
        gaps = [b - a for a, b in itertools.pairwise(probes)]
        assert gaps
        assert min(gaps) >= 5
        assert max(gaps) <= 121
        assert len(asked) <= 10 + 1800 / 120 + 6
        rig.transport.fault = None
        back = rig.clock.now()
        await rig.run_until(START + 3 * 3600)
    events = [e["event"] for e in logs]
    assert events.count("api_unreachable") == 1
    (again,) = [e for e in logs if e["event"] == "api_reachable_again"]
    assert 1700 <= again["down_seconds"] <= 1800 + 121
    after = await rig.samples()
    assert after["whatsapp_exporter_api_reachable"] == {(): 1.0}
    updated = after["whatsapp_usage_updated_timestamp_seconds"]
    assert len(updated) == len(rig.fleet.channels())
    assert min(updated.values()) >= back
    assert rig.sim.rate_limited == 0
