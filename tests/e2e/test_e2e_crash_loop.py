"""The polling exporter killed with SIGKILL 20 times at random moments, against the simulator with
compressed windows: the ledger on disk keeps every budget, the state file stays sound, and the
numbers end equal to the truth."""

from __future__ import annotations

import random
import signal
import sqlite3
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import assert_matches_truth, wait_http
from tests.e2e.test_e2e_polling import fast_env, fast_simulator  # noqa: F401 - a fixture

pytestmark = pytest.mark.e2e

KILLS = 20


def test_twenty_kill_9s_break_no_budget_and_lose_nothing(fast_simulator, start_exporter,  # noqa: F811
                                                         tmp_path):
    """Twenty SIGKILLs, each 0.2 to 2 s after start-up: the simulator never answers 429, the
    state file passes SQLite's integrity check after every kill, and a last clean run's
    counters equal the simulator's truth at each channel's fetch time."""
    rnd = random.Random(20)
    env = fast_env(fast_simulator)
    state = tmp_path / "state.sqlite3"
    lifetimes = []
    for _ in range(KILLS):
        proc, url = start_exporter(env)
        started = time.monotonic()
        time.sleep(rnd.uniform(0.2, 2.0))
        proc.stop(signal.SIGKILL)
        lifetimes.append(time.monotonic() - started)
        with sqlite3.connect(state) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stats = httpx.get(fast_simulator + "/_sim/stats").json()
    assert stats["rate_limited"] == 0, stats
    assert stats["by_scope"].get("usage_channel", 0) > KILLS  # the runs did poll

    proc, url = start_exporter(env)
    wait_http(url + "/readyz", timeout=30)
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(url + "/metrics").text
        if text.count("whatsapp_usage_updated_timestamp_seconds{") == len(stats["channels"]):
            break
        time.sleep(0.5)
    proc.stop()
    final = httpx.get(fast_simulator + "/_sim/stats").json()
    assert final["rate_limited"] == 0, final
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    fetched = {dict(k)["channel_id"]: v for (n, k), v in samples.items()
               if n == "whatsapp_usage_updated_timestamp_seconds"}
    assert len(fetched) == len(stats["channels"])
    for channel_id, at in fetched.items():
        got = {(dict(k)["category"], dict(k)["pricing_type"]): v for (n, k), v in samples.items()
               if n == "whatsapp_messages_total" and dict(k)["channel_id"] == channel_id}
        assert_matches_truth(fast_simulator, channel_id, at, got)
    print(f"kills={KILLS} lifetimes={min(lifetimes):.2f}-{max(lifetimes):.2f}s "
          f"requests={final['requests']} rate_limited={final['rate_limited']}")
