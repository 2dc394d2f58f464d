"""Command line: `python -m exporter [flags]` or `whatsapp-usage-exporter [flags]`.

Flags override `D360_*` environment variables, which override the config file. Secrets are
taken from the environment or the config file only, never from flags (they would show in `ps`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import structlog

from exporter import __version__
from exporter.config import ConfigError, Settings, load_settings
from exporter.db import StateError
from exporter.logging import configure


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="whatsapp-usage-exporter",
        description="Prometheus exporter for WhatsApp Business usage and cost via 360dialog. "
        "With Partner API credentials it polls the API; with only a webhook secret it counts "
        "webhooks; with neither (and D360_DEMO not false) it runs in demo mode against a "
        "built-in simulator.",
    )
    p.add_argument("command", nargs="?", choices=["probe", "backfill"],
                   help="probe: one call of each kind against the configured API, inside the "
                   "budgets, and what the exporter understood of each answer; backfill: write "
                   "the history kept in the state file (D360_BACKFILL_MONTHS) as OpenMetrics "
                   "for promtool tsdb create-blocks-from openmetrics")
    p.add_argument("--channel-id", help="with probe: the channel to probe (default: the first "
                   "listed)")
    p.add_argument("--out", help="with backfill: the file to write (- for standard output)")
    p.add_argument("--label", action="append", default=[], metavar="NAME=VALUE",
                   help="with backfill: a label for every sample, such as job=... and "
                   "instance=... as your Prometheus adds them when it scrapes (repeatable)")
    p.add_argument("--config", dest="config_file", help="TOML config file (D360_CONFIG_FILE)")
    p.add_argument("--demo", action="store_true", default=None,
                   help="run against the built-in simulated 360dialog API (D360_DEMO)")
    p.add_argument("--listen-address", help="host:port for /metrics (D360_LISTEN_ADDRESS)")
    p.add_argument("--state-path", help="SQLite state file (D360_STATE_PATH)")
    p.add_argument("--api-url", help="Partner API base URL (D360_API_URL)")
    p.add_argument("--partner-id", help="360dialog partner id (D360_PARTNER_ID)")
    p.add_argument("--log-format", choices=["json", "console", "auto"], help="(D360_LOG_FORMAT)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="(D360_LOG_LEVEL)")
    p.add_argument("--shard-index", type=int, help="(D360_SHARD_INDEX)")
    p.add_argument("--shard-count", type=int, help="(D360_SHARD_COUNT)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration, print it with secrets masked, and exit")
    p.add_argument("--version", action="version", version=__version__)
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items()
        if k not in ("check_config", "command", "channel_id", "out", "label") and v is not None
    }
    return load_settings(**overrides)


def check_config(settings: Settings) -> list[str]:
    """`--check-config`: what the process will do, mode first, then the settings it will use;
    or a `ConfigError` when the state path or a listen host cannot be used on this machine."""
    from exporter.preflight import (  # noqa: PLC0415 - only this command and a start need it
        check_resolves,
        state_directories_to_create,
    )

    check_resolves("D360_LISTEN_ADDRESS", settings.listen_address, settings.listen[0])
    if settings.webhooks_enabled:
        check_resolves("D360_WEBHOOK_LISTEN_ADDRESS", settings.webhook_listen_address,
                       settings.webhook_listen[0])
    missing = state_directories_to_create(settings.state_path)
    lines = settings.mode_lines()
    if missing:
        lines.append(f"state=will create {missing[0]} for {settings.state_path}")
    return lines + [f"{key}={value}" for key, value in settings.masked().items()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        try:
            lines = check_config(settings)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        print("\n".join(lines))
        return 0
    secrets = [s.get_secret_value() for s in (settings.api_key, settings.password,
                                              settings.webhook_secret,
                                              settings.webhook_hmac_secret,
                                              settings.metrics_bearer_token,
                                              settings.metrics_basic_auth_password) if s]
    configure(settings.log_format, settings.log_level, secrets)
    if args.command == "backfill":
        return write_backfill(settings, args.out, args.label)
    if args.command == "probe":
        try:
            return asyncio.run(_probe(settings, args.channel_id))
        except (ConfigError, StateError, ValueError) as exc:
            print(f"probe failed: {exc}", file=sys.stderr)
            return 2
    from exporter.app import serve  # noqa: PLC0415 - keeps --check-config and --help fast

    try:
        asyncio.run(serve(settings))
    except ConfigError as exc:  # a listener or the state path: one line, as for a bad setting
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (StateError, ValueError) as exc:
        structlog.get_logger("exporter").error("startup_failed", error=str(exc))
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def write_backfill(settings: Settings, out: str | None, labels: list[str]) -> int:
    """`backfill --out FILE`: the fetched past from the state file, as OpenMetrics; no API
    call is made, so it may run beside the exporter on the same file."""
    from exporter.backfill.history import History  # noqa: PLC0415 - this command only
    from exporter.backfill.openmetrics import by_channel, parse_labels, write  # noqa: PLC0415
    from exporter.polling.store import Store  # noqa: PLC0415

    if not out:
        print("backfill: --out FILE is required (- for standard output)", file=sys.stderr)
        return 2
    try:
        extra = parse_labels(labels)
    except ValueError as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 2
    if not settings.state_path.is_file():
        print(f"backfill: no state file at {settings.state_path} (D360_STATE_PATH): run the "
              "exporter with D360_BACKFILL_MONTHS first", file=sys.stderr)
        return 2
    try:
        store = Store(settings.state_path)
        history = History(settings.state_path)
    except StateError as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 2
    try:
        channels = dict(store.channels)
        months = sum(n for ch, n in history.done_per_channel().items() if ch in channels)
        if out == "-":
            write(sys.stdout, lambda: by_channel(history.months(), channels), extra)
        else:
            with open(out, "w", encoding="utf-8") as f:
                write(f, lambda: by_channel(history.months(), channels), extra)
    finally:
        history.close()
        store.close()
    if not months:
        print("backfill: the state file holds no history yet (D360_BACKFILL_MONTHS is 0, or "
              "the exporter has not fetched any); the file has no samples", file=sys.stderr)
    else:
        print(f"backfill: {months} channel-months of {len(channels)} channels written to "
              f"{out}", file=sys.stderr)
    return 0


async def _probe(settings: Settings, channel_id: str | None) -> int:
    """Probe the configured API, or the demo's simulator when there are no credentials."""
    from exporter.probe import as_text, run_probe  # noqa: PLC0415 - only this command needs it

    demo = None
    if settings.mode == "demo":
        from exporter.demo import Demo  # noqa: PLC0415 - loads the simulator: demo only

        settings, demo = await Demo.start(settings)
    try:
        result = await run_probe(settings, channel_id=channel_id)
    finally:
        if demo is not None:
            await demo.stop()
    print(as_text(result), end="")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
