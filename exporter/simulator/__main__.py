"""`python -m exporter.simulator`: the simulated Partner API on its own, for tests and demos.

Prints `SIMULATOR_URL=http://host:port` once listening; runs until SIGTERM or SIGINT. With
`--webhook-url` it also pushes the simulated traffic as signed Meta-format webhooks (the secret
comes from `--webhook-hmac-secret` or, better, `SIM_WEBHOOK_HMAC_SECRET`, which stays out of `ps`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

import httpx
import structlog

from exporter.clock import SystemClock
from exporter.serving import cancel_and_wait
from exporter.simulator.app import SimLimits, SimulatedApi, Window
from exporter.simulator.fleet import build_fleet
from exporter.simulator.server import start_server
from exporter.simulator.webhooks import WebhookEmitter


def _window(text: str) -> Window:
    count, _, seconds = text.partition("/")
    try:
        return int(count), float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected count/seconds, got {text!r}") from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected channel counts such as 3,1, got {text!r}")
    return sizes


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
    p.add_argument("--webhook-url", default=None,
                   help="also POST the simulated traffic as Meta-format webhooks to this URL")
    p.add_argument("--webhook-hmac-secret", default=None,
                   help="sign webhooks with x-360dialog-signature (hex HMAC-SHA256) "
                        "(default: $SIM_WEBHOOK_HMAC_SECRET)")
    p.add_argument("--webhook-interval", type=_positive, default=5.0, metavar="SECONDS")
    p.add_argument("--waba-sizes", type=_sizes, default=None, metavar="N,N,...",
                   help="channels per WABA (default: the demo fleet's)")
    args = p.parse_args(argv)
    hmac_secret = args.webhook_hmac_secret or os.environ.get("SIM_WEBHOOK_HMAC_SECRET") or None
    limits = SimLimits(
        usage_channel=args.limit_usage_channel or defaults.usage_channel,
        usage_waba=args.limit_usage_waba or defaults.usage_waba,
        client_balance=args.limit_client_balance or defaults.client_balance,
        channel_balance_channel=args.limit_channel_balance or defaults.channel_balance_channel,
        partner_balance=args.limit_partner_balance or defaults.partner_balance,
        discovery=args.limit_discovery or defaults.discovery,
    )
    fleet = build_fleet(args.seed, partner_id=args.partner_id, waba_sizes=args.waba_sizes)
    clock = SystemClock()
    api = SimulatedApi(fleet, clock.now, api_key=args.api_key, limits=limits,
                       token_ttl=args.token_ttl)
    if args.webhook_url:
        # The emitter logs; its lines go to stderr, since stdout carries the SIMULATOR_URL line
        # that launchers wait for.
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))

    async def run() -> None:
        server = await start_server(api, args.host, args.port)
        print(f"SIMULATOR_URL={server.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with contextlib.AsyncExitStack() as stack:
            if args.webhook_url:
                client = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0))
                emitter = WebhookEmitter(fleet, clock.now, args.webhook_url, client,
                                         hmac_secret=hmac_secret,
                                         interval=args.webhook_interval, sleep=clock.sleep)
                task = asyncio.create_task(emitter.run(), name="webhook-emitter")
                stack.push_async_callback(cancel_and_wait, task)
            await stop.wait()
        await server.stop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
