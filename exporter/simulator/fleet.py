"""A seeded, realistic fleet: clients, WABAs of 1 to 50 channels, phone numbers in several
markets, some idle channels and skewed activity."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_WABA_SIZES = (1, 3, 8, 20, 50, 2, 5, 12)
# calling code, ISO country, digits after the code
MARKETS = (("49", "DE", 11), ("44", "GB", 10), ("55", "BR", 11), ("91", "IN", 10),
           ("1", "US", 10), ("34", "ES", 9))


def unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True, slots=True)
class SimChannel:
    id: str
    client_id: str
    waba_id: str
    waba_external_id: str
    phone_number: str
    name: str
    status: str
    country: str
    activity: float  # traffic multiplier; 0.0 is a channel with no traffic at all


@dataclass(frozen=True, slots=True)
class SimWaba:
    id: str
    external_id: str
    name: str
    client_id: str
    channels: tuple[SimChannel, ...]


@dataclass(frozen=True, slots=True)
class SimClient:
    id: str
    name: str
    status: str
    currency: str
    wabas: tuple[SimWaba, ...]


@dataclass(frozen=True)
class Fleet:
    seed: int
    partner_id: str
    clients: tuple[SimClient, ...]

    def __post_init__(self) -> None:
        index = {ch.id: ch for c in self.clients for w in c.wabas for ch in w.channels}
        object.__setattr__(self, "_channels", index)
        object.__setattr__(self, "_clients", {c.id: c for c in self.clients})
        object.__setattr__(self, "_waba_of", {
            ch.id: w for c in self.clients for w in c.wabas for ch in w.channels})

    def channels(self) -> list[SimChannel]:
        return list(self._channels.values())  # type: ignore[attr-defined]

    def wabas(self) -> list[SimWaba]:
        return [w for c in self.clients for w in c.wabas]

    def channel(self, channel_id: str) -> SimChannel | None:
        return self._channels.get(channel_id)  # type: ignore[attr-defined, no-any-return]

    def client(self, client_id: str) -> SimClient | None:
        return self._clients.get(client_id)  # type: ignore[attr-defined, no-any-return]

    def waba_of(self, channel_id: str) -> SimWaba:
        return self._waba_of[channel_id]  # type: ignore[attr-defined, no-any-return]


_NAMES = ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Soylent",
          "Tyrell", "Cyberdyne", "Wonka", "Gringotts")


def build_fleet(seed: int = 7, *, waba_sizes: Sequence[int] | None = None, clients: int = 4,
                partner_id: str = "sim_PA") -> Fleet:
    sizes = tuple(waba_sizes) if waba_sizes is not None else DEFAULT_WABA_SIZES
    n_clients = max(1, min(clients, len(sizes)))
    per_client: list[list[SimWaba]] = [[] for _ in range(n_clients)]
    serial = 0
    for w_index, size in enumerate(sizes):
        c_index = w_index % n_clients
        client_id = f"cl_{seed:02d}{c_index:04d}"
        waba_id = f"wa_{seed:02d}{w_index:05d}"
        external = str(100_000_000_000_000 + int(unit(seed, "waba", w_index) * 9e14))
        brand = _NAMES[w_index % len(_NAMES)]
        channels = []
        for i in range(size):
            serial += 1
            code, country, digits = MARKETS[int(unit(seed, "market", w_index) * len(MARKETS))]
            number = str(10 ** (digits - 1) + serial * 7919 % (9 * 10 ** (digits - 1)))
            r = unit(seed, "activity", serial)
            activity = 0.0 if r < 0.1 else round(0.2 + 3 * (r - 0.1) ** 3 * 4, 3)
            channels.append(SimChannel(
                id=f"ch_{seed:02d}{serial:06d}", client_id=client_id, waba_id=waba_id,
                waba_external_id=external, phone_number=f"+{code}{number}",
                name=f"{brand} {'Support' if i % 2 == 0 else 'Sales'} {i + 1}",
                status="ready", country=country, activity=activity))
        per_client[c_index].append(SimWaba(waba_id, external, brand, client_id, tuple(channels)))
    return Fleet(seed, partner_id, tuple(
        SimClient(
            id=f"cl_{seed:02d}{c:04d}", name=f"{_NAMES[c % len(_NAMES)]} Holdings",
            status="active", currency="EUR" if c % 3 == 2 else "USD", wabas=tuple(wabas))
        for c, wabas in enumerate(per_client)))
