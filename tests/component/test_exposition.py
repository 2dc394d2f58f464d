"""/metrics through the ASGI app: formats, compression, caching, readiness."""

from __future__ import annotations

import asyncio
import base64
import gzip
import zlib
from collections.abc import Awaitable, Coroutine
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.types import ASGIApp

from exporter.clock import FakeClock
from exporter.domain import Balance, CallTotal, Channel, MessageTotal, MonthUsage
from exporter.metrics import exposition as exposition_module
from exporter.metrics import journal
from exporter.metrics.exposition import Exposition, om_latest
from exporter.metrics.http import ScrapeAuth, metrics_app
from exporter.metrics.selfmetrics import SelfMetrics
from exporter.polling.collector import CHANNEL_FAMILIES, UsageCollector
from exporter.polling.store import Store
from exporter.webhooks.collector import WebhookCollector
from exporter.webhooks.state import ChannelLabel, WebhookState
from tests.component.webhooks_kit import accept, status_body

T = TypeVar("T")
DEC = 1_764_547_200
CH = Channel("ch_1", "cl_1", "wa_1", "1049", "+49151", "Support", "ready")


def setup(tmp_path: Path, ready: bool = True) -> tuple[
        Store, CollectorRegistry, SelfMetrics, Exposition, Starlette]:
    store = Store(tmp_path / "s.sqlite3")
    store.set_discovery([], [CH])
    store.put_usage("ch_1", {DEC: MonthUsage(DEC, "USD", {
        ("marketing", "regular"): MessageTotal(120, Decimal("13.73")),
        ("mystery_category", "regular"): MessageTotal(2, Decimal("0.5")),
    })}, DEC + 3600.0, keep_from=0)
    store.put_partner_balances([Balance(Decimal("100.45"), "EUR")], DEC)
    usage = UsageCollector(store, FakeClock(DEC + 7200), 1800, lambda ch: True)
    data = CollectorRegistry(auto_describe=False)  # the oracle: prometheus-client's rendering
    data.register(usage)
    own = SelfMetrics()
    exposition = Exposition(CollectorRegistry(auto_describe=False), own.registry,
                            [store], parts=[usage])
    return store, data, own, exposition, metrics_app(exposition, lambda: ready, "test")


async def get(app: ASGIApp, path: str = "/metrics", **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        return await c.get(path, headers=headers)


async def test_plain_body_equals_prometheus_client_rendering(tmp_path: Path) -> None:
    """The per-channel rendering is exactly what generate_latest renders for the same data,
    before and after a channel changes, and in OpenMetrics too."""
    store, data, own, _, app = setup(tmp_path)
    r = await get(app, **{"Accept-Encoding": "identity"})
    assert r.content == generate_latest(data) + generate_latest(own.registry)
    store.set_discovery([], [CH, Channel("ch_2", "cl_1", "wa_1", "1049", "+49152",
                                         'Sales "EU"\\n', "ready")])
    store.put_channel_balance("ch_2", Balance(Decimal("3.5"), "EUR"), DEC)
    r = await get(app, **{"Accept-Encoding": "identity"})
    assert r.content == generate_latest(data) + generate_latest(own.registry)
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    r = await get(app, Accept="application/openmetrics-text; version=1.0.0")
    assert r.content == om_latest(data).removesuffix(b"# EOF\n") + om_latest(own.registry)


async def test_gzip_is_one_stream_any_reader_can_decode(tmp_path: Path) -> None:
    """gzip bodies decode whole with a single-member reader, equal to the plain body."""
    _, _, _, exposition, app = setup(tmp_path)
    r = await get(app, **{"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    raw = await _raw(app)
    plain, _ = exposition.body(openmetrics=False, compress=False)
    single = zlib.decompressobj(31)
    assert single.decompress(raw) == plain
    assert single.eof
    assert single.unused_data == b""
    assert gzip.decompress(raw) == plain


async def _raw(app: ASGIApp) -> bytes:
    transport = httpx.ASGITransport(app=app)
    request = httpx.Request("GET", "http://x/metrics", headers={"Accept-Encoding": "gzip"})
    response = await transport.handle_async_request(request)
    assert isinstance(response.stream, httpx.AsyncByteStream)
    return b"".join([chunk async for chunk in response.stream])


async def test_openmetrics_has_one_eof_at_the_end(tmp_path: Path) -> None:
    """OpenMetrics is served on request and ends with exactly one '# EOF'."""
    _, _, _, _, app = setup(tmp_path)
    r = await get(app, Accept="application/openmetrics-text; version=1.0.0")
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    assert r.text.count("# EOF") == 1
    assert "whatsapp_messages_total{" in r.text


async def test_usage_part_is_rendered_only_when_data_changes(tmp_path: Path) -> None:
    """Scrapes reuse the rendered usage part until the store changes."""
    store, _, _, exposition, app = setup(tmp_path)
    for _ in range(3):
        await get(app)
    assert exposition.renders == 1
    store.put_partner_balances([Balance(Decimal(1), "EUR")], DEC)
    await get(app)
    assert exposition.renders == 2


async def test_unknown_categories_are_bucketed_not_minted(tmp_path: Path) -> None:
    """A category outside Meta's known set is reported as 'other'."""
    _, _, _, _, app = setup(tmp_path)
    text = (await get(app)).text
    assert "mystery_category" not in text
    assert 'category="other"' in text


async def test_readiness_follows_discovery(tmp_path: Path) -> None:
    """/readyz is 503 until ready; /healthz is always 200."""
    *_, app = setup(tmp_path, ready=False)
    assert (await get(app, "/readyz")).status_code == 503
    assert (await get(app, "/healthz")).status_code == 200
    *_, app = setup(tmp_path, ready=True)
    assert (await get(app, "/readyz")).status_code == 200


async def test_metrics_can_require_a_bearer_token_or_basic_auth(tmp_path: Path) -> None:
    """With credentials configured /metrics answers 401 without them; probes stay open."""
    _, _, _, exposition, _ = setup(tmp_path)
    refused = []
    app = metrics_app(exposition, lambda: True, "test",
                      ScrapeAuth(bearer_token="tok-123", basic=("prom", "pw-456")),
                      lambda: refused.append(1))
    basic = "Basic " + base64.b64encode(b"prom:pw-456").decode()
    assert (await get(app, Authorization="Bearer tok-123")).status_code == 200
    assert (await get(app, Authorization=basic)).status_code == 200
    for wrong in ("", "Bearer tok-12", "Bearer tok-1234", "Basic bm9wZQ==", "Basic !!",
                  "Basic " + base64.b64encode(b"prom:pw-45").decode(), "Digest x"):
        r = await get(app, Authorization=wrong) if wrong else await get(app)
        assert r.status_code == 401, wrong
        assert r.headers["www-authenticate"] == 'Basic realm="metrics"'
        assert "tok-123" not in r.text
    assert len(refused) == 7
    assert (await get(app, "/healthz")).status_code == 200
    assert (await get(app, "/readyz")).status_code == 200


async def test_each_format_is_rendered_only_when_asked_for(tmp_path: Path) -> None:
    """Plain scrapes never render OpenMetrics; the first OpenMetrics scrape renders it once."""
    _, _, _, exposition, app = setup(tmp_path)
    await get(app, **{"Accept-Encoding": "identity"})
    await get(app, **{"Accept-Encoding": "gzip"})
    assert exposition.renders == 1
    for _ in range(2):
        await get(app, Accept="application/openmetrics-text; version=1.0.0")
    assert exposition.renders == 2


def fleet_setup(tmp_path: Path, n: int = 100,
                ) -> tuple[Store, FakeClock, CollectorRegistry, Exposition]:
    """`n` channels over several blocks, each with usage and a balance."""
    store = Store(tmp_path / "f.sqlite3")
    channels = [Channel(f"ch_{i:03d}", "cl_1", f"wa_{i % 7}", "1049", f"+49151{i}",
                        f'Line "{i}"\\', "ready") for i in range(n)]
    store.set_discovery([], channels)
    for i, ch in enumerate(channels):
        store.put_usage(ch.id, {DEC: MonthUsage(DEC, "USD", {
            ("marketing", "regular"): MessageTotal(i, Decimal(i) / 7)})}, DEC + i, keep_from=0)
        store.put_channel_balance(ch.id, Balance(Decimal(i), "EUR"), DEC)
    clock = FakeClock(DEC + 7200)
    usage = UsageCollector(store, clock, 1800, lambda ch: True)
    oracle = CollectorRegistry(auto_describe=False)
    oracle.register(usage)
    exposition = Exposition(CollectorRegistry(auto_describe=False), CollectorRegistry(),
                            [store], parts=[usage])
    return store, clock, oracle, exposition


def check_against_oracle(exposition: Exposition, oracle: CollectorRegistry) -> None:
    plain, _ = exposition.body(openmetrics=False, compress=False)
    assert plain == generate_latest(oracle)
    gz, _ = exposition.body(openmetrics=False, compress=True)
    single = zlib.decompressobj(31)
    assert single.decompress(gz) == plain
    assert single.eof
    assert single.unused_data == b""
    om, _ = exposition.body(openmetrics=True, compress=False)
    assert om == om_latest(oracle)  # the own registry is empty: its part is "# EOF"


def test_a_change_re_renders_one_block(tmp_path: Path) -> None:
    """Across several blocks, a written channel re-renders its block only, and every format
    (gzip built from blocks deflated apart) still equals the oracle."""
    store, _, oracle, exposition = fleet_setup(tmp_path)
    check_against_oracle(exposition, oracle)
    renderer = exposition._parts[0]
    rendered, joined = renderer.rendered_keys, renderer.joined_blocks
    store.put_usage("ch_050", {DEC: MonthUsage(DEC, "USD", {
        ("utility", "regular"): MessageTotal(99_999, Decimal("1234.5"))})}, DEC + 99, keep_from=0)
    exposition.refresh()  # renders and deflates the change between scrapes, as the app does
    block = exposition_module.BLOCK_CHANNELS
    assert (renderer.rendered_keys, renderer.joined_blocks) == (rendered + block, joined + 1)
    check_against_oracle(exposition, oracle)
    store.put_channel_balance("ch_099", Balance(Decimal("-3.25"), "USD"), DEC)
    check_against_oracle(exposition, oracle)
    last = 100 - 3 * block  # ch_099 is in the last, short block
    assert (renderer.rendered_keys, renderer.joined_blocks) == (rendered + block + last,
                                                                joined + 2)


def test_new_channels_a_new_month_and_a_lost_journal_render_everything_anew(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """New and renamed channels from discovery, the month moving on, and a reader left
    behind by more writes than the journal keeps all end up in the body as the oracle has it."""
    store, clock, oracle, exposition = fleet_setup(tmp_path)
    check_against_oracle(exposition, oracle)
    store.set_discovery([], [*store.channels.values(),
                             Channel("ch_0005", "cl_1", "wa_1", "1049", "+4915", "New", "ready")])
    check_against_oracle(exposition, oracle)
    renamed = [ch if ch.id != "ch_070" else Channel("ch_070", "cl_1", "wa_0", "1049", "+4915",
                                                    "Renamed", "banned")
               for ch in store.channels.values()]
    store.set_discovery([], renamed)
    check_against_oracle(exposition, oracle)
    clock.set(DEC + 40 * 86_400)  # January: December's counters leave the view
    check_against_oracle(exposition, oracle)
    monkeypatch.setattr(journal, "JOURNAL_LIMIT", 8)
    for i in range(20):
        store.put_channel_balance(f"ch_{i:03d}", Balance(Decimal(i + 1000), "EUR"), DEC)
    check_against_oracle(exposition, oracle)


async def test_the_reporting_month_switching_renders_anew_with_no_write(tmp_path: Path) -> None:
    """When the reporting month moves on, the next scrape renders the new month's view though
    nothing was written, and later scrapes in that month reuse it."""
    store, clock, oracle, exposition = fleet_setup(tmp_path, n=40)
    check_against_oracle(exposition, oracle)
    renders = exposition.renders
    version = store.version
    clock.set(DEC + 31 * 86_400 + 1800 + 1)  # January, past the month's grace
    plain, _ = exposition.body(openmetrics=False, compress=False)
    assert store.version == version
    assert exposition.renders == renders + 1
    assert plain == generate_latest(oracle)
    messages = [line for line in plain.decode().splitlines()
                if line.startswith("whatsapp_messages_total{")]
    assert len(messages) == 40  # December's series restart at zero rather than vanish
    assert all(line.endswith(" 0.0") for line in messages)
    check_against_oracle(exposition, oracle)
    renders = exposition.renders
    clock.set(DEC + 40 * 86_400)
    await get(metrics_app(exposition, lambda: True, "test"))
    check_against_oracle(exposition, oracle)
    assert exposition.renders == renders


def test_webhook_counters_render_per_channel_as_prometheus_client_would(tmp_path: Path) -> None:
    """The webhook part, kept in blocks per (waba_id, channel_id), equals prometheus-client's
    rendering of the same counters as deliveries are counted, new channels included."""
    numbers = {f"49151000{i:04d}": ChannelLabel(f"wa_{i % 3}", f"ch_{i:03d}") for i in range(90)}
    state = WebhookState(tmp_path / "w.sqlite3", channel_of=numbers.get, max_unmapped_channels=5)
    collector = WebhookCollector(state)
    oracle = CollectorRegistry(auto_describe=False)
    oracle.register(collector)
    exposition = Exposition(CollectorRegistry(auto_describe=False), CollectorRegistry(),
                            [state], parts=[collector])

    def deliver(i: int, status: str, category: str = "utility") -> None:
        number = list(numbers)[i] if i < len(numbers) else f"3{i}"  # unknown: pn_ series
        accept(state, status_body(f"wamid.{i}.{category}", status, category, number=number,
                                  pn_id=str(i)), DEC)

    for i in range(0, 90, 2):
        deliver(i, "sent")
    check_against_oracle(exposition, oracle)
    deliver(41, "delivered", "marketing")  # a new channel in the middle of the order
    deliver(40, "read")
    deliver(200, "sent")  # unmapped
    check_against_oracle(exposition, oracle)
    renderer = exposition._parts[0]
    joined = renderer.joined_blocks
    deliver(88, "delivered")
    check_against_oracle(exposition, oracle)
    assert renderer.joined_blocks == joined + 1


def test_the_background_refresh_follows_the_scrape_interval(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    """Every second until two scrapes show their interval; then a third of it, never under a
    second."""
    _, _, _, exposition = fleet_setup(tmp_path, n=3)
    clock = iter([100.0, 130.0, 130.5])
    monkeypatch.setattr(exposition_module, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    assert exposition.refresh_interval() == 1.0
    exposition.body(openmetrics=False, compress=True)
    assert exposition.refresh_interval() == 1.0
    exposition.body(openmetrics=False, compress=True)
    assert exposition.refresh_interval() == 10.0
    exposition.body(openmetrics=False, compress=True)
    assert exposition.refresh_interval() == 1.0  # 0.5 s apart: the floor


def test_channel_lines_equal_prometheus_client_for_awkward_values(tmp_path: Path) -> None:
    """The fast per-channel text (label names fixed, values escaped once per channel) is what
    prometheus-client writes for the same samples: quotes, backslashes and newlines in every
    free-text label, last month's series restarting at zero, unknown categories summed into
    'other', values Go writes with exponents, a channel never polled, one without a balance,
    rows whose points came partly without a cost (no cost sample) and their counter."""
    store = Store(tmp_path / "a.sqlite3")
    odd = 'a"b\\c\nd'
    channels = [Channel(f"ch_{odd}", f"cl_{odd}", "", f"wa_{odd}", f"+49{odd}", odd, odd),
                Channel("ch_b", "cl_1", "wa_1", "", "+4915", "Plain", "ready"),
                Channel("ch_c", "cl_1", "wa_1", "1049", "+4916", "Never polled", "ready")]
    store.set_discovery([], channels)
    nov = DEC - 30 * 86_400
    store.put_usage(channels[0].id, {
        nov: MonthUsage(nov, "EUR", {("service", "regular"): MessageTotal(5, Decimal("1.5"))}),
        DEC: MonthUsage(DEC, f"US{odd}", {
            ("marketing", "regular"): MessageTotal(12_345_678, Decimal("9876543.21")),
            ("mystery_a", "regular"): MessageTotal(2, Decimal("0.5")),
            ("mystery_b", "regular"): MessageTotal(3, Decimal("-0"), 3),
        }, {"business_initiated": CallTotal(3, 61, Decimal("0.07")),
            "sideways": CallTotal(1, 2, Decimal("0"), 1)})}, DEC + 0.25, keep_from=0)
    store.put_usage("ch_b", {nov: MonthUsage(nov, "", {("utility", "regular"): MessageTotal(
        1, Decimal(1), 1)}, {"user_initiated": CallTotal(1, 1, Decimal(1))})}, DEC, keep_from=0)
    store.put_channel_balance(channels[0].id, Balance(Decimal("-1e-7"), odd), DEC)
    store.put_channel_balance("ch_c", Balance(Decimal("1234567.5"), "USD"), DEC)
    usage = UsageCollector(store, FakeClock(DEC + 7200), 1800, lambda ch: True)
    oracle = CollectorRegistry(auto_describe=False)
    oracle.register(usage)
    exposition = Exposition(CollectorRegistry(auto_describe=False), CollectorRegistry(),
                            [store], parts=[usage])
    check_against_oracle(exposition, oracle)
    text = exposition.body(openmetrics=False, compress=False)[0].decode()
    for family in CHANNEL_FAMILIES:  # every family took part
        assert f"\n{family.sample_name}{{" in text


def test_a_cost_that_came_partly_missing_is_not_exposed_as_a_number(tmp_path: Path) -> None:
    """A row whose points lacked a cost has no cost sample (its other series stay), the
    month's points without a cost are counted per channel, and a channel whose only such
    points were last month shows the counter restarted at zero; a channel with every cost has
    no such series."""
    store = Store(tmp_path / "u.sqlite3")
    channels = [Channel(f"ch_{i}", "cl_1", "wa_1", "1049", f"+4915{i}", "n", "ready")
                for i in range(3)]
    store.set_discovery([], channels)
    nov = DEC - 30 * 86_400
    store.put_usage("ch_0", {DEC: MonthUsage(DEC, "USD", {
        ("marketing", "regular"): MessageTotal(4, Decimal("0.2"), 1),
        ("utility", "regular"): MessageTotal(2, Decimal("0.1"))},
        {"business_initiated": CallTotal(1, 30, Decimal(0), 1),
         "user_initiated": CallTotal(1, 9, Decimal("0.01"))})}, DEC, keep_from=0)
    store.put_usage("ch_1", {nov: MonthUsage(nov, "USD", {
        ("marketing", "regular"): MessageTotal(1, Decimal(0), 1)})}, DEC, keep_from=0)
    store.put_usage("ch_2", {DEC: MonthUsage(DEC, "USD", {
        ("marketing", "regular"): MessageTotal(1, Decimal("0.05"))})}, DEC, keep_from=0)
    usage = UsageCollector(store, FakeClock(DEC + 7200), 1800, lambda ch: True)
    oracle = CollectorRegistry(auto_describe=False)
    oracle.register(usage)
    exposition = Exposition(CollectorRegistry(auto_describe=False), CollectorRegistry(),
                            [store], parts=[usage])
    check_against_oracle(exposition, oracle)

    def values(name: str, **labels: str) -> dict[str, float]:
        return {s.labels["channel_id"]: s.value for m in oracle.collect() for s in m.samples
                if s.name == name and labels.items() <= s.labels.items()}

    assert values("whatsapp_messages_total", category="marketing") == {
        "ch_0": 4.0, "ch_1": 0.0, "ch_2": 1.0}
    assert values("whatsapp_cost_total", category="marketing") == {"ch_1": 0.0, "ch_2": 0.05}
    assert values("whatsapp_cost_total", category="utility") == {"ch_0": 0.1}
    assert values("whatsapp_calls_total", direction="business_initiated") == {"ch_0": 1.0}
    assert values("whatsapp_call_cost_total") == {"ch_0": 0.01}
    assert values("whatsapp_usage_points_without_cost_total") == {"ch_0": 2.0, "ch_1": 0.0}


def test_gzip_only_keeps_no_text_and_a_later_plain_scrape_is_right(tmp_path: Path) -> None:
    """While only gzip is asked for, blocks keep their deflated form alone; a block re-rendered
    meanwhile, and a plain scrape afterwards (inflated back), still equal the oracle."""
    store, _, oracle, exposition = fleet_setup(tmp_path)
    gz, _ = exposition.body(openmetrics=False, compress=True)
    renderer = exposition._parts[0]
    assert all(piece._data is None for block in renderer._blocks for piece in block.pieces)
    store.put_usage("ch_040", {DEC: MonthUsage(DEC, "USD", {
        ("utility", "regular"): MessageTotal(7, Decimal("7.25"))})}, DEC + 1, keep_from=0)
    exposition.refresh()
    assert all(piece._data is None for block in renderer._blocks for piece in block.pieces)
    gz, _ = exposition.body(openmetrics=False, compress=True)
    assert gzip.decompress(gz) == generate_latest(oracle)
    plain, _ = exposition.body(openmetrics=False, compress=False)
    assert plain == generate_latest(oracle)
    store.put_channel_balance("ch_041", Balance(Decimal("2.5"), "USD"), DEC)
    check_against_oracle(exposition, oracle)  # both asked for now: both kept
    assert all(piece._data is not None for block in renderer._blocks for piece in block.pieces)


def test_a_block_keeps_its_place_when_discovery_changes_nothing(tmp_path: Path) -> None:
    """Discovery repeating the same fleet moves the layout but re-renders no block."""
    store, _, oracle, exposition = fleet_setup(tmp_path)
    check_against_oracle(exposition, oracle)
    renderer = exposition._parts[0]
    joined = renderer.joined_blocks
    store.set_discovery([], list(store.channels.values()))
    check_against_oracle(exposition, oracle)
    assert renderer.joined_blocks == joined


async def turns_while(work: Awaitable[T]) -> tuple[T, int]:
    """Run `work` and count the event loop's turns until it is done."""
    turns = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal turns
        while not done.is_set():
            await asyncio.sleep(0)
            turns += 1

    counting = asyncio.create_task(ticker())
    try:
        return await work, turns
    finally:
        done.set()
        await counting


async def test_a_scrape_renders_in_slices_that_let_the_loop_run(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                ) -> None:
    """A scrape and a background refresh that find many blocks to render give the event loop
    a turn between slices (webhooks are committed in between), with the same body."""
    monkeypatch.setattr(exposition_module, "SLICE_SECONDS", 0.0)  # a turn after every block
    store, _, oracle, exposition = fleet_setup(tmp_path, n=200)  # 7 blocks
    blocks = -(-200 // exposition_module.BLOCK_CHANNELS)
    (chunks, _), turns = await turns_while(exposition.achunks(openmetrics=False,
                                                              compress=False))
    assert turns >= blocks - 1
    assert b"".join(chunks) == generate_latest(oracle)
    for i in range(0, 96, 16):  # a change in three of the seven blocks
        store.put_channel_balance(f"ch_{i:03d}", Balance(Decimal(-i), "USD"), DEC)
    _, turns = await turns_while(exposition.arefresh())
    assert turns >= 2
    renderer = exposition._parts[0]
    joined = renderer.joined_blocks
    (chunks, _), _ = await turns_while(exposition.achunks(openmetrics=False, compress=False))
    assert renderer.joined_blocks == joined  # the refresh left nothing to render
    assert b"".join(chunks) == generate_latest(oracle)
    check_against_oracle(exposition, oracle)


async def test_a_part_mostly_changed_is_left_to_the_scrape(tmp_path: Path) -> None:
    """With most blocks of a part changed since it was rendered, a background refresh leaves
    them to the scrape: under a stream they change again before it, and it renders them again.
    With few changed, it renders them ahead."""
    store, _, oracle, exposition = fleet_setup(tmp_path, n=200)  # 7 blocks
    exposition.body(openmetrics=False, compress=True)
    renderer = exposition._parts[0]
    for i in range(0, 200, 16):  # a change in every block
        store.put_channel_balance(f"ch_{i:03d}", Balance(Decimal(-i), "USD"), DEC)
    assert renderer.stale_share(1.0) == 1.0
    joined = renderer.joined_blocks
    await exposition.arefresh()
    exposition.refresh()
    assert renderer.joined_blocks == joined
    check_against_oracle(exposition, oracle)  # the scrape renders them, all seven
    assert renderer.joined_blocks == joined + 7
    store.put_channel_balance("ch_050", Balance(Decimal(5), "USD"), DEC)
    assert renderer.stale_share(exposition_module.AHEAD_STALE_SHARE) == 1 / 7
    await exposition.arefresh()
    assert renderer.joined_blocks == joined + 8
    check_against_oracle(exposition, oracle)
    assert renderer.joined_blocks == joined + 8  # the refresh left the scrape nothing


async def test_a_render_cut_short_leaves_nothing_stale(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A sliced update cancelled part-way (a scrape whose client went away, a shutdown) hands
    the blocks it did not reach to the next update, whether it was re-rendering changed blocks
    or laying the part out anew."""
    monkeypatch.setattr(exposition_module, "SLICE_SECONDS", 0.0)
    store, _, oracle, exposition = fleet_setup(tmp_path, n=200)

    async def cut_short(work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(work)
        for _ in range(3):
            await asyncio.sleep(0)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await cut_short(exposition.achunks(openmetrics=False, compress=False))  # the first layout
    check_against_oracle(exposition, oracle)
    for i in range(0, 96, 16):  # three of the seven blocks: a background refresh renders them
        store.put_channel_balance(f"ch_{i:03d}", Balance(Decimal(-i), "USD"), DEC)
    await cut_short(exposition.arefresh())
    check_against_oracle(exposition, oracle)
    for i in range(0, 200, 16):  # changes in every block
        store.put_channel_balance(f"ch_{i:03d}", Balance(Decimal(-i - 1), "USD"), DEC)
    await cut_short(exposition.achunks(openmetrics=False, compress=True))
    check_against_oracle(exposition, oracle)
    for i in range(0, 200, 16):  # changes in every block, and a new channel: a new layout
        store.put_channel_balance(f"ch_{i:03d}", Balance(Decimal(i), "USD"), DEC)
    store.set_discovery([], [*store.channels.values(),
                             Channel("ch_999", "cl_1", "wa_1", "1049", "+4915", "New", "ready")])
    await cut_short(exposition.achunks(openmetrics=False, compress=True))
    check_against_oracle(exposition, oracle)
