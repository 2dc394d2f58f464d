"""`python -m exporter.simulator`: the simulated Partner API on its own, for tests and demos.

Prints `SIMULATOR_URL=http://host:port` once listening; runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from exporter.clock import SystemClock
from exporter.simulator.app import SimLimits, SimulatedApi, Window
from exporter.simulator.fleet import build_fleet
from exporter.simulator.server import start_server


def _window(text: str) -> Window:
    count, _, seconds = text.partition("/")
    try:
        return int(count), float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected count/seconds, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exporter.simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--partner-id", default="sim_PA")
    p.add_argument("--api-key", default="sim-key")
    p.add_argument("--token-ttl", type=float, default=3600.0)
    defaults = SimLimits()
    for name in ("usage_channel", "usage_waba", "client_balance", "channel_balance",
                 "partner_balance", "discovery"):
        p.add_argument(f"--limit-{name.replace('_', '-')}", type=_window, default=None)
    args = p.parse_args(argv)
    limits = SimLimits(
        usage_channel=args.limit_usage_channel or defaults.usage_channel,
        usage_waba=args.limit_usage_waba or defaults.usage_waba,
        client_balance=args.limit_client_balance or defaults.client_balance,
        channel_balance_channel=args.limit_channel_balance or defaults.channel_balance_channel,
        partner_balance=args.limit_partner_balance or defaults.partner_balance,
        discovery=args.limit_discovery or defaults.discovery,
    )
    api = SimulatedApi(build_fleet(args.seed, partner_id=args.partner_id), SystemClock().now,
                       api_key=args.api_key, limits=limits, token_ttl=args.token_ttl)

    async def run() -> None:
        server = await start_server(api, args.host, args.port)
        print(f"SIMULATOR_URL={server.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
