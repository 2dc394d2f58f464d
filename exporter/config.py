"""Settings: the one place configuration enters.

Sources, highest priority first: CLI flags, `D360_*` environment variables, an optional TOML file
(`D360_CONFIG_FILE` or `--config`, keys without the prefix), defaults. Every setting is validated
at start-up; a bad one stops the process with a line naming the environment variable, or for a
value from the file, the file, its line and the key as written there.

The mode (`decide_mode`) comes from explicit intent only: `D360_DEMO`, Partner API credentials
and webhook authentication. Addresses, paths and the other settings never change it.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from exporter.domain import Limit

ENV_PREFIX = "D360_"
REAL_API_URL = "https://hub.360dialog.io/api/v2"
# 9100-9999 on the Prometheus default port allocations list is exhausted; 10360 is unlisted.
DEFAULT_PORT = 10360
DEMO_STATE_PATH = Path("whatsapp-usage-exporter-demo.sqlite3")
# The simulator bills at this card's prices, so the demo's estimate can be compared with its truth.
EXAMPLE_RATE_CARD = Path(__file__).parent / "webhooks" / "ratecards" / "example-usd.toml"

Mode = Literal["demo", "polling", "webhook-only"]

CREDENTIALS = "D360_API_KEY (or D360_USERNAME and D360_PASSWORD)"
WEBHOOK_AUTH = "D360_WEBHOOK_SECRET or D360_WEBHOOK_HMAC_SECRET (or D360_WEBHOOK_OPEN=true)"


def decide_mode(*, demo: bool | None, credentials: bool, webhook_auth: bool,
                partner_id: bool) -> Mode:
    """The mode, from explicit intent alone:

    - `D360_DEMO=true`: demo (the built-in simulator; credentials given are not used).
    - Partner API credentials: polling, with the webhook receiver on if webhook auth is set.
    - No credentials but webhook auth (a secret, or `D360_WEBHOOK_OPEN=true`): webhook-only.
    - Nothing of these: demo, unless `D360_DEMO=false` (an error saying what is missing) or a
      partner id shows that polling was meant (an error naming the missing credentials).

    Listen addresses, the state path, the rate card and forwarding apply to whichever mode this
    picks (in the demo, to its own receiver); they never pick one.
    """
    if demo:
        return "demo"
    if credentials:
        return "polling"
    if partner_id:
        raise ValueError(f"{CREDENTIALS} is required with D360_PARTNER_ID")
    if webhook_auth:
        return "webhook-only"
    if demo is False:
        raise ValueError(
            "D360_DEMO=false: no Partner API credentials and no webhook auth; set "
            f"D360_PARTNER_ID and {CREDENTIALS} to poll the Partner API, or {WEBHOOK_AUTH} to "
            "count webhooks only")
    return "demo"


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _parse_limit(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return Limit.parse(value) if isinstance(value, str) else value


def _parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be host:port such as 0.0.0.0:{DEFAULT_PORT}, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an exporter listens on all interfaces by default


IdList = Annotated[list[str], NoDecode]
# NoDecode: the env source would otherwise JSON-decode "10" to an int before we see the text.
LimitSetting = Annotated[Limit, NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
    )

    # Partner API
    api_url: str = REAL_API_URL
    partner_id: str | None = None
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    request_timeout_seconds: float = Field(30.0, gt=0)
    max_concurrent_requests: int = Field(8, ge=1, le=256)

    # Process
    state_path: Path = Path("whatsapp-usage-exporter.sqlite3")
    listen_address: str = f"0.0.0.0:{DEFAULT_PORT}"
    log_format: Literal["json", "console", "auto"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics_bearer_token: SecretStr | None = None
    metrics_basic_auth_username: str | None = None
    metrics_basic_auth_password: SecretStr | None = None
    demo: bool | None = None  # None: decided by the rule in `decide_mode`
    demo_seed: int = 7
    config_file: Path | None = None

    # Budgets, each "count/window_seconds"
    limit_usage_channel: LimitSetting = Field(Limit(10, 3600), validate_default=False)
    limit_usage_waba: LimitSetting = Field(Limit(200, 3600), validate_default=False)
    limit_client_balance: LimitSetting = Field(Limit(5, 30), validate_default=False)
    # Unknown limit: 3P code quotes 10/h per channel and 200/h per WABA for the channel endpoints,
    # possibly shared with usage. One balance call per channel per hour, counted in the usage
    # budgets too, is safe either way and balances move slowly.
    limit_channel_balance: LimitSetting = Field(Limit(1, 3600), validate_default=False)
    limit_partner_balance: LimitSetting = Field(Limit(1, 300), validate_default=False)
    limit_discovery: LimitSetting = Field(Limit(30, 3600), validate_default=False)
    channel_balance_shares_usage_budget: bool = True
    # Whether 5/30 is per client or for the whole partner is unknown; "partner" is the safe reading.
    client_balance_scope: Literal["partner", "client"] = "partner"
    client_balance_interval_seconds: float = Field(300.0, gt=0)
    safety_margin: float = Field(0.02, ge=0, le=1)

    # Scheduling
    discovery_interval_seconds: float = Field(900.0, gt=0)
    # Meta's spelling (HALF_HOUR, DAILY, MONTHLY); 360dialog documents none for usage, so on a 400
    # the client tries the lower-case one once and keeps whichever the API accepts.
    usage_granularity: str = "DAILY"
    close_out_delay_seconds: float = Field(900.0, ge=0)
    month_grace_seconds: float = Field(1800.0, ge=0)
    # Yielding is off by default: over 30 simulated days of business-hours traffic, idle
    # channels at 0.25 after 3 polls left data 6% staler while traffic flowed (a channel's return
    # is noticed only at its next, slower poll), and after 12 polls 8% fresher but idle
    # channels' data 24% older overall; see bench/README.md.
    idle_weight: float = Field(1.0, gt=0, le=1)
    idle_after_polls: int = Field(12, ge=1)
    # History: complete UTC months before the first start to fetch, at the lowest priority
    # inside the same budgets (0: none); see `whatsapp-usage-exporter backfill`.
    backfill_months: int = Field(0, ge=0, le=60)

    # Webhooks (on when a secret is set, or when explicitly open)
    webhook_listen_address: str = f"0.0.0.0:{DEFAULT_PORT + 1}"
    webhook_secret: SecretStr | None = None
    webhook_secret_header: str = "X-Webhook-Secret"  # noqa: S105 - a header name, not a secret
    webhook_hmac_secret: SecretStr | None = None
    webhook_open: bool = False
    webhook_max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    webhook_read_timeout_seconds: float = Field(10.0, gt=0, le=300)
    webhook_workers: int = Field(0, ge=0, le=16)
    webhook_dedupe_window_seconds: float = Field(8 * 86_400, gt=0)
    webhook_max_unmapped_channels: int = Field(100, ge=0)
    # Polled growth a category needs before its reconciliation ratio is shown (see reconcile.py).
    webhook_reconcile_min_messages: int = Field(100, ge=1)
    webhook_rate_card: Path | None = None
    webhook_forward_url: str | None = None
    # Both senders' signatures, so the application can verify what it receives.
    webhook_forward_headers: IdList = Field(
        default_factory=lambda: ["X-Hub-Signature-256", "x-360dialog-signature"])
    webhook_forward_timeout_seconds: float = Field(10.0, gt=0)
    webhook_forward_concurrency: int = Field(4, ge=1, le=64)
    webhook_forward_max_age_seconds: float = Field(7 * 86_400, gt=0)

    # Spend budgets (TOML): exposed as whatsapp_spend_budget for the budget alerts
    spend_budgets: Path | None = None

    # Selection and sharding
    allow_client_ids: IdList = Field(default_factory=list)
    deny_client_ids: IdList = Field(default_factory=list)
    allow_waba_ids: IdList = Field(default_factory=list)
    deny_waba_ids: IdList = Field(default_factory=list)
    allow_channel_ids: IdList = Field(default_factory=list)
    deny_channel_ids: IdList = Field(default_factory=list)
    shard_index: int = Field(0, ge=0)
    shard_count: int = Field(1, ge=1)

    _split = field_validator(
        "allow_client_ids", "deny_client_ids", "allow_waba_ids", "deny_waba_ids",
        "allow_channel_ids", "deny_channel_ids", "webhook_forward_headers", mode="before",
    )(_split_list)
    _limits = field_validator(
        "limit_usage_channel", "limit_usage_waba", "limit_client_balance",
        "limit_channel_balance", "limit_partner_balance", "limit_discovery", mode="before",
    )(_parse_limit)

    @field_validator("listen_address", "webhook_listen_address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        _parse_address(value)
        return value

    @field_validator("api_url", "webhook_forward_url")
    @classmethod
    def _check_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        # The API base gets paths appended; the forward URL is the user's, used as given.
        return value.rstrip("/") if info.field_name == "api_url" else value

    @field_validator("webhook_rate_card")
    @classmethod
    def _check_rate_card(cls, value: Path | None) -> Path | None:
        if value is not None:
            # Imported here: a start without a rate card never loads the webhook side.
            from exporter.webhooks.ratecard import load_rate_card  # noqa: PLC0415

            load_rate_card(value)  # a RateCardError is a ValueError naming the file and entry
        return value

    @field_validator("spend_budgets")
    @classmethod
    def _check_spend_budgets(cls, value: Path | None) -> Path | None:
        if value is not None:
            from exporter.spend.budgets import load_spend_budgets  # noqa: PLC0415 - as above

            load_spend_budgets(value)  # a SpendBudgetError is a ValueError naming file and entry
        return value

    @field_validator("webhook_forward_headers")
    @classmethod
    def _check_header_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"{name!r} is not an HTTP header name")
        return value

    @field_validator("usage_granularity")
    @classmethod
    def _check_granularity(cls, value: str) -> str:
        if value.lower() not in {"half_hour", "daily", "monthly"}:
            raise ValueError("must be HALF_HOUR, DAILY or MONTHLY (any case)")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.shard_index >= self.shard_count:
            raise ValueError(
                f"D360_SHARD_INDEX ({self.shard_index}) must be below D360_SHARD_COUNT "
                f"({self.shard_count})"
            )
        if (self.username is None) != (self.password is None):
            missing = "D360_PASSWORD" if self.password is None else "D360_USERNAME"
            raise ValueError(f"{missing} is required when the other bearer credential is set")
        if (self.metrics_basic_auth_username is None) != (
                self.metrics_basic_auth_password is None):
            missing = ("D360_METRICS_BASIC_AUTH_PASSWORD"
                       if self.metrics_basic_auth_password is None
                       else "D360_METRICS_BASIC_AUTH_USERNAME")
            raise ValueError(f"{missing} is required when the other basic-auth setting is set")
        if self.has_credentials and not self.partner_id and not self.demo:
            raise ValueError("D360_PARTNER_ID is required with Partner API credentials")
        mode = decide_mode(demo=self.demo, credentials=self.has_credentials,
                           webhook_auth=self.webhook_auth_given,
                           partner_id=self.partner_id is not None)
        if mode == "demo":
            # The demo's own defaults, here so that --check-config shows what the demo uses.
            if "state_path" not in self.model_fields_set:
                self.state_path = DEMO_STATE_PATH
            if self.webhook_rate_card is None:
                self.webhook_rate_card = EXAMPLE_RATE_CARD
        elif not self.webhook_auth_given:
            # The demo always receives (its simulator sends); elsewhere a receiver needs auth.
            for name in ("webhook_listen_address", "webhook_forward_url", "webhook_rate_card"):
                if name in self.model_fields_set and getattr(self, name) is not None:
                    raise ValueError(
                        f"{ENV_PREFIX}{name.upper()} needs the webhook receiver, which is off "
                        f"without {WEBHOOK_AUTH}")
        if self.webhooks_enabled:
            _check_distinct_listeners(self.listen_address, self.webhook_listen_address)
        return self

    @property
    def has_credentials(self) -> bool:
        return self.api_key is not None or self.username is not None

    @property
    def webhook_auth_given(self) -> bool:
        return (self.webhook_secret is not None or self.webhook_hmac_secret is not None
                or self.webhook_open)

    @property
    def mode(self) -> Mode:
        return decide_mode(demo=self.demo, credentials=self.has_credentials,
                           webhook_auth=self.webhook_auth_given,
                           partner_id=self.partner_id is not None)

    @property
    def webhooks_enabled(self) -> bool:
        """Whether the webhook receiver runs: with webhook auth, and always in the demo (which
        makes a secret for its simulator when none is given)."""
        return self.webhook_auth_given or self.mode == "demo"

    @property
    def polling_enabled(self) -> bool:
        return self.mode != "webhook-only"

    @property
    def webhook_listen(self) -> tuple[str, int]:
        return _parse_address(self.webhook_listen_address)

    @property
    def listen(self) -> tuple[str, int]:
        return _parse_address(self.listen_address)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file_from(init_settings, env_settings)
        if config_file is not None:
            sources.append(_TomlFile(settings_cls, toml_file=config_file))
        return tuple(sources)

    def masked(self) -> dict[str, str]:
        """What `--check-config` prints after the mode: each setting this mode uses, as it
        will use it, secrets masked. Settings of a part that does not run are left out (the
        mode lines say which part is off and why)."""
        mode = self.mode
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            if name in _POLLING_SETTINGS and mode == "webhook-only":
                continue
            if name.startswith("webhook_") and not self.webhooks_enabled:
                continue
            if name == "demo_seed" and mode != "demo":
                continue
            value = getattr(self, name)
            if mode == "demo" and name in _DEMO_REPLACES:
                if name not in _DEMO_SHOWS:
                    continue
                shown = _DEMO_SHOWS[name]
            elif (mode == "demo" and name == "webhook_hmac_secret"
                  and not self.webhook_auth_given):
                shown = "(made for this run; the simulator signs with it)"
            elif name == "demo":
                shown = str(mode == "demo")
            elif isinstance(value, SecretStr):
                shown = "********" if value.get_secret_value() else ""
            elif value is None:
                shown = ""
            elif isinstance(value, list):
                shown = ",".join(value)
            elif name == "webhook_forward_url":
                shown = _without_credentials(value)
            else:
                shown = str(value)
            out[ENV_PREFIX + name.upper()] = shown
        return out

    def mode_lines(self) -> list[str]:
        """What the process will do, in the first lines of `--check-config`."""
        mode = self.mode
        if mode == "demo":
            why = ("D360_DEMO=true" if self.demo
                   else "neither Partner API credentials nor webhook auth")
            what = [f"mode=demo ({why}): polling a built-in simulated 360dialog API with "
                    "made-up data"]
        elif mode == "polling":
            what = [f"mode=polling: the 360dialog Partner API at {self.api_url} for partner "
                    f"{self.partner_id}"]
        else:
            what = [f"mode=webhook-only: counting webhooks; no Partner API polling without "
                    f"{CREDENTIALS}"]
        if self.webhooks_enabled:
            what.append(f"webhooks=receiving at {self.webhook_listen_address}")
        else:
            what.append(f"webhooks=off: no {WEBHOOK_AUTH}")
        return what


# Used by the poller only: not shown in webhook-only mode.
_POLLING_SETTINGS = frozenset({
    "api_url", "partner_id", "api_key", "username", "password", "request_timeout_seconds",
    "max_concurrent_requests", "limit_usage_channel", "limit_usage_waba", "limit_client_balance",
    "limit_channel_balance", "limit_partner_balance", "limit_discovery",
    "channel_balance_shares_usage_budget", "client_balance_scope",
    "client_balance_interval_seconds", "safety_margin", "discovery_interval_seconds",
    "usage_granularity", "close_out_delay_seconds", "idle_weight", "idle_after_polls",
    "backfill_months", "allow_client_ids", "deny_client_ids", "allow_waba_ids", "deny_waba_ids",
    "allow_channel_ids", "deny_channel_ids", "shard_index", "shard_count",
})
# What the demo puts in place of the Partner API settings when it starts its simulator.
_DEMO_REPLACES = frozenset({"api_url", "partner_id", "api_key", "username", "password"})
_DEMO_SHOWS = {
    "api_url": "(the built-in simulator, on a free port of 127.0.0.1)",
    "partner_id": "(the simulated fleet's)",
    "api_key": "(the simulator's)",
}


_ANY_HOST = {"0.0.0.0", "::", ""}  # noqa: S104 - names of "every interface", not a bind


def _check_distinct_listeners(metrics: str, webhooks: str) -> None:
    """Two listeners on one port fail at start with "address already in use": say it now."""
    (host, port), (webhook_host, webhook_port) = _parse_address(metrics), _parse_address(webhooks)
    if port == webhook_port != 0 and (host == webhook_host or host in _ANY_HOST
                                      or webhook_host in _ANY_HOST):
        raise ValueError(
            f"D360_WEBHOOK_LISTEN_ADDRESS={webhooks}: the same port as "
            f"D360_LISTEN_ADDRESS={metrics}; the webhook receiver needs a port of its own")


def _without_credentials(url: str) -> str:
    """A URL fit to print: webhook URLs often carry a token as user info or in the query."""
    url = re.sub(r"^(https?://)[^/@]*@", r"\1****@", url)
    return re.sub(r"\?.*$", "?****", url)


def _config_file_from(*sources: PydanticBaseSettingsSource) -> Path | None:
    for source in sources:
        value = source().get("config_file")
        if value:
            path = Path(str(value))
            if not path.is_file():
                raise ConfigError(f"D360_CONFIG_FILE={path}: no such file")
            return path
    return None


class ConfigError(Exception):
    """Configuration that cannot start the exporter; the message names the setting."""


class _TomlFile(TomlConfigSettingsSource):
    """The config file, read so that a file that cannot be read or parsed names itself, and
    for a syntax error its line and the key on it."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return _read_toml(Path(str(file_path)))[0]


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"D360_CONFIG_FILE={path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"D360_CONFIG_FILE={path}: not UTF-8 text") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(toml_syntax_error(path, text, str(exc))) from None


def toml_syntax_error(path: Path, text: str, message: str) -> str:
    """`file:line: key: not valid TOML: reason`, from tomllib's "reason (at line N, column M)"."""
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if found is None:
        return f"{path}: not valid TOML: {message}"
    reason, line_no = message[:found.start()], int(found[1])
    lines = text.splitlines()
    line = lines[line_no - 1] if 0 < line_no <= len(lines) else ""
    key, sep, value = line.partition("=")
    where = f"{path}:{line_no}"
    if not sep or not key.strip() or key.lstrip().startswith(("[", "#")):
        return f"{where}: not valid TOML: {reason}"
    hint = ""
    value = value.split("#")[0].strip() if '"' not in value else value.strip()
    if value and not _parses(f"v = {value}") and _parses(f"v = {_quoted(value)}"):
        hint = f"; text needs quotes: {key.strip()} = {_quoted(value)}"
    return f"{where}: {key.strip()}: not valid TOML: {reason}{hint}"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parses(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from overrides (CLI), the environment and the config file, or raise
    `ConfigError` with one line per bad setting, each naming its environment variable, or
    where the value came from the config file, the file, line and key as written there."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, _file_keys(given))) from None
    except ValueError as exc:  # raised by sources
        raise ConfigError(f"D360_CONFIG_FILE: {exc}") from None


@dataclass(frozen=True)
class _FileKeys:
    """The top-level keys the config file itself supplies (the environment and flags win), by
    lower-case name: the key as written and its line."""

    path: Path
    keys: dict[str, tuple[str, int | None]]


def _file_keys(overrides: dict[str, Any]) -> _FileKeys | None:
    env = {key.upper(): value for key, value in os.environ.items()}
    value = overrides.get("config_file") or env.get(ENV_PREFIX + "CONFIG_FILE")
    if not value or not Path(str(value)).is_file():
        return None
    path = Path(str(value))
    try:
        data, text = _read_toml(path)
    except ConfigError:
        return None
    keys: dict[str, tuple[str, int | None]] = {}
    for key in data:
        name = key.lower()
        if name in overrides or ENV_PREFIX + name.upper() in env:
            continue
        keys[name] = (key, _line_of(text, key))
    return _FileKeys(path, keys)


def _line_of(text: str, key: str) -> int | None:
    """The line where a top-level key (or table) is defined, bare or quoted."""
    spelled = rf"(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')"
    pattern = re.compile(rf"^\s*(?:{spelled}\s*[.=]|\[+\s*{spelled}\s*[.\]])")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def _set_in_file(message: str, file: _FileKeys | None) -> str:
    if file is None:
        return ""
    named = dict.fromkeys(m.lower() for m in re.findall(rf"{ENV_PREFIX}([A-Z0-9_]+)", message))
    where = [f"{written} at {file.path}:{line}" if line is not None else f"{written} in {file.path}"
             for written, line in (file.keys[name] for name in named if name in file.keys)]
    return f" (set as {', '.join(where)})" if where else ""


def _describe(exc: ValidationError, file: _FileKeys | None = None) -> str:
    lines = []
    fields = list(Settings.model_fields)
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
        message = error["msg"].removeprefix("Value error, ")
        if not loc:
            # Model-level checks name their settings themselves, as environment variables;
            # say where the file sets any of them.
            lines.append(message + _set_in_file(message, file))
            continue
        name = loc[0].lower()  # the file source lowers known keys, not unknown ones
        if file is not None and name in file.keys:
            written, line = file.keys[name]
            if error["type"] == "extra_forbidden":
                close = difflib.get_close_matches(name, fields, n=1)
                message = "not a setting" + (f" (did you mean {close[0]}?)" if close else "")
            where = f"{file.path}:{line}" if line is not None else str(file.path)
            lines.append(f"{where}: {written}: {message}")
        else:
            lines.append(f"{ENV_PREFIX}{name.upper()}: {message}")
    return "; ".join(lines)
