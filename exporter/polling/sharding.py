"""Which replica polls what, and with which share of the partner-wide budgets.

WABAs are spread over `D360_SHARD_COUNT` replicas by a stable hash, and so are the clients whose
balance is polled; budgets that are shared by the whole partner (client balances, partner
balance, discovery) are split between them, so the replicas together never exceed a limit. The
allow and deny lists narrow what a replica polls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.config import Settings
from exporter.domain import Channel, Limit
from exporter.polling import ledger as budget


def stable_shard(key: str, shard_count: int) -> int:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shard_count


@dataclass(frozen=True, slots=True)
class ShardBudgets:
    """The limits this replica plans with: per-channel and per-WABA budgets belong whole to the
    shard owning the WABA; partner-wide ones are split (or owned by the first shards)."""

    usage_channel: Limit
    usage_waba: Limit
    channel_balance: Limit | None
    client_balance: Limit | None
    partner_balance: Limit | None
    discovery: Limit

    @classmethod
    def from_settings(cls, s: Settings) -> ShardBudgets:
        n, i = s.shard_count, s.shard_index
        discovery = shard_limit(s.limit_discovery, n, i)
        if discovery is None:
            raise ValueError(
                f"D360_LIMIT_DISCOVERY ({s.limit_discovery}) cannot be split over {n} shards: "
                "every shard discovers; raise the limit or lower D360_SHARD_COUNT"
            )
        if s.client_balance_scope == "client":
            client_balance: Limit | None = s.limit_client_balance
        else:
            client_balance = shard_limit(s.limit_client_balance, n, i)
        return cls(
            usage_channel=s.limit_usage_channel,
            usage_waba=s.limit_usage_waba,
            channel_balance=s.limit_channel_balance,
            client_balance=client_balance,
            partner_balance=s.limit_partner_balance if i == 0 else None,
            discovery=discovery,
        )

    def ledger_limits(self) -> dict[str, Limit]:
        limits = {
            budget.USAGE_CHANNEL: self.usage_channel,
            budget.USAGE_WABA: self.usage_waba,
            budget.DISCOVERY: self.discovery,
        }
        optional = {
            budget.CHANNEL_BALANCE: self.channel_balance,
            budget.CLIENT_BALANCE: self.client_balance,
            budget.PARTNER_BALANCE: self.partner_balance,
        }
        limits.update({kind: limit for kind, limit in optional.items() if limit is not None})
        return limits


class Selection:
    """Static allow/deny lists and the shard: which discovered channels this replica polls."""

    def __init__(self, s: Settings) -> None:
        self._s = s
        self._lists = [(set(allow), set(deny)) for allow, deny in (
            (s.allow_client_ids, s.deny_client_ids), (s.allow_waba_ids, s.deny_waba_ids),
            (s.allow_channel_ids, s.deny_channel_ids))]
        # Both are asked for every channel at start-up and at every rendering of the fleet.
        self._everything = not any(allow or deny for allow, deny in self._lists)
        self._one_shard = s.shard_count == 1

    @staticmethod
    def _passes(values: Iterable[str], allow: set[str], deny: set[str]) -> bool:
        present = {v for v in values if v}
        if allow and not present & allow:
            return False
        return not present & deny

    def wanted(self, ch: Channel) -> bool:
        if self._everything:
            return True
        clients, wabas, channels = self._lists
        return (
            self._passes([ch.client_id], *clients)
            and self._passes([ch.waba_id, ch.waba_external_id], *wabas)
            and self._passes([ch.id], *channels)
        )

    def owns(self, ch: Channel) -> bool:
        return self._one_shard or (
            stable_shard(ch.waba_id or ch.id, self._s.shard_count) == self._s.shard_index)


def owned_clients(
    client_ids: Iterable[str],
    share: Limit | None,
    whole: Limit,
    *,
    per_client: bool,
    shard_count: int,
    shard_index: int,
) -> list[str]:
    """The clients whose balance this replica polls, in the order given. `share` is this
    replica's client balance budget (None: it polls none), `whole` the configured one. A budget
    per client goes whole to the shard its client hashes to; a partner-wide one is split over
    the first shards (`budget_owners`), and its clients are spread over those."""
    if share is None:
        return []
    owners = shard_count if per_client else budget_owners(whole, shard_count)
    return [c for c in client_ids if stable_shard(c, owners) == shard_index]


def budget_owners(limit: Limit, shard_count: int) -> int:
    """How many shards share a partner-wide budget: never more than it has calls per window."""
    return min(limit.count, shard_count)


def shard_limit(limit: Limit, shard_count: int, shard_index: int) -> Limit | None:
    """This replica's share of a budget that all shards draw from together, or None.

    Independent sliding windows only add up safely when each share is a whole number of calls
    in the *same* window, so a budget of fewer calls than shards goes to the first shards only
    (the others return None and leave that work to them).
    """
    owners = budget_owners(limit, shard_count)
    if shard_index >= owners:
        return None
    return Limit(limit.count // owners, limit.window_seconds)
