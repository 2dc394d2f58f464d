"""Which replica polls what, and with which share of the partner-wide budgets."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.config import Settings
from exporter.domain import Channel, Limit
from exporter.polling import ledger as budget
from exporter.polling.sharding import (
    Selection,
    ShardBudgets,
    budget_owners,
    owned_clients,
    shard_limit,
    stable_shard,
)


def channel(id_: str = "ch", client: str = "cl", waba: str = "wa",
            meta_waba: str = "10") -> Channel:
    return Channel(id_, client, waba, meta_waba, "+49151", "Support", "ready")


def test_stable_shard_is_stable_and_in_range():
    """The same key always lands on the same shard, below the shard count."""
    keys = [f"waba-{i}" for i in range(500)]
    first = [stable_shard(k, 7) for k in keys]
    assert first == [stable_shard(k, 7) for k in keys]
    assert set(first) == set(range(7))
    assert stable_shard("waba-1", 1) == 0


def test_stable_shard_does_not_move_between_versions():
    """The hash is fixed (SHA-256): a new version must not move WABAs to other shards, where
    their budgets' recorded calls are not."""
    assert [stable_shard(k, 1000) for k in ("waba-1", "waba-2", "abc")] == [349, 518, 74]


def test_stable_shard_spreads_keys_evenly():
    """Many keys spread over the shards within a few percent of an even split."""
    counts = Counter(stable_shard(f"w{i}", 4) for i in range(8000))
    assert all(abs(n - 2000) < 200 for n in counts.values())


@given(count=st.integers(1, 50), window=st.integers(1, 3600), shards=st.integers(1, 64))
def test_shard_shares_never_add_up_to_more_than_the_whole(count, window, shards):
    """Split budgets sum to at most the original count in the same window."""
    limit = Limit(count, float(window))
    shares = [shard_limit(limit, shards, i) for i in range(shards)]
    assert all(s is None or s.window_seconds == limit.window_seconds for s in shares)
    assert sum(s.count for s in shares if s is not None) <= count
    assert sum(s is not None for s in shares) == budget_owners(limit, shards)


def test_each_shard_budgets_split_the_partner_wide_limits_only():
    """Channel and WABA budgets go whole to every shard; partner-wide ones are split, and the
    partner balance belongs to the first shard."""
    first = ShardBudgets.from_settings(Settings(shard_count=2, shard_index=0))
    second = ShardBudgets.from_settings(Settings(shard_count=2, shard_index=1))
    for share in (first, second):
        assert share.usage_channel == Limit(10, 3600)
        assert share.usage_waba == Limit(200, 3600)
        assert share.client_balance == Limit(2, 30)  # 5 per 30 s over two shards
        assert share.discovery == Limit(15, 3600)
    assert first.partner_balance == Limit(1, 300)
    assert second.partner_balance is None
    assert budget.PARTNER_BALANCE not in second.ledger_limits()


def test_a_per_client_budget_is_not_split():
    """When each client has its own client balance budget, every shard plans with all of it."""
    share = ShardBudgets.from_settings(
        Settings(shard_count=3, shard_index=2, client_balance_scope="client"))
    assert share.client_balance == Limit(5, 30)


def test_a_discovery_budget_too_small_to_split_is_refused():
    """Every shard discovers, so a discovery budget with fewer calls than shards is an error."""
    with pytest.raises(ValueError, match="D360_LIMIT_DISCOVERY"):
        ShardBudgets.from_settings(
            Settings(shard_count=4, shard_index=3, limit_discovery=Limit(3, 3600)))


def test_allow_and_deny_lists_narrow_the_channels_polled():
    """A channel is wanted if each allow list names it (by any of its ids) and no deny list
    does; the Meta WABA id counts as the WABA's."""
    s = Settings(allow_client_ids=["cl"], deny_channel_ids=["ch2"], deny_waba_ids=["99"])
    selection = Selection(s)
    assert selection.wanted(channel("ch1"))
    assert not selection.wanted(channel("ch2"))
    assert not selection.wanted(channel("ch1", client="other"))
    assert not selection.wanted(channel("ch1", meta_waba="99"))
    assert Selection(Settings()).wanted(channel("anything", client="other"))


def test_a_shard_owns_the_channels_of_its_wabas():
    """Channels are owned by WABA, so a WABA's channels (and its budget) stay on one shard."""
    shards = [Selection(Settings(shard_count=3, shard_index=i)) for i in range(3)]
    for w in range(30):
        same_waba = [channel(f"ch{w}-{k}", waba=f"wa{w}") for k in range(4)]
        owners = {i for i, s in enumerate(shards) for ch in same_waba if s.owns(ch)}
        assert owners == {stable_shard(f"wa{w}", 3)}
    assert Selection(Settings()).owns(channel())


def test_client_balances_are_owned_by_exactly_one_shard():
    """Per client, every client is polled by exactly one of all the shards."""
    clients = [f"cl{i}" for i in range(40)]
    owned = [owned_clients(clients, Limit(5, 30), Limit(5, 30), per_client=True,
                           shard_count=4, shard_index=i) for i in range(4)]
    assert sorted(c for mine in owned for c in mine) == sorted(clients)
    assert all(mine for mine in owned)


def test_a_partner_wide_client_budget_goes_to_its_owners_only():
    """Split partner-wide, the clients are spread over the shards that got a share; the
    others poll no client balance."""
    whole = Limit(2, 30)
    clients = [f"cl{i}" for i in range(40)]
    owned = [owned_clients(clients, shard_limit(whole, 5, i), whole, per_client=False,
                           shard_count=5, shard_index=i) for i in range(5)]
    assert sorted(c for mine in owned for c in mine) == sorted(clients)
    assert owned[0]
    assert owned[1]
    assert owned[2:] == [[], [], []]
    assert owned_clients(clients, None, whole, per_client=True, shard_count=1,
                         shard_index=0) == []
