"""Settings: the one place configuration enters.

Sources, highest priority first: CLI flags, `D360_*` environment variables, an optional TOML file
(`D360_CONFIG_FILE` or `--config`, keys without the prefix), defaults. Every setting is validated
at start-up; a bad one stops the process with a line naming the environment variable.
"""

from __future__ import annotations

import re
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
from exporter.spend.budgets import load_spend_budgets
from exporter.webhooks.ratecard import load_rate_card

ENV_PREFIX = "D360_"
REAL_API_URL = "https://hub.360dialog.io/api/v2"
# 9100-9999 on the Prometheus default port allocations list is exhausted; 10360 is unlisted.
DEFAULT_PORT = 10360





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
    demo: bool = False
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
            load_rate_card(value)  # a RateCardError is a ValueError naming the file and entry
        return value

    @field_validator("spend_budgets")
    @classmethod
    def _check_spend_budgets(cls, value: Path | None) -> Path | None:
        if value is not None:
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
        if self.has_credentials and not self.partner_id:
            raise ValueError("D360_PARTNER_ID is required with Partner API credentials")
        if ("webhook_listen_address" in self.model_fields_set and not self.webhooks_enabled
                and not self.demo):
            raise ValueError(
                "D360_WEBHOOK_SECRET or D360_WEBHOOK_HMAC_SECRET is required to receive "
                "webhooks (or D360_WEBHOOK_OPEN=true to accept them unauthenticated)"
            )
        for name in ("webhook_forward_url", "webhook_rate_card"):
            if getattr(self, name) is not None and not self.webhooks_enabled and not self.demo:
                raise ValueError(
                    f"D360_{name.upper()} needs the webhook receiver: set D360_WEBHOOK_SECRET "
                    "or D360_WEBHOOK_HMAC_SECRET (or D360_WEBHOOK_OPEN=true)")
        if self.partner_id and not self.has_credentials and not self.demo:
            raise ValueError(
                "D360_API_KEY (or D360_USERNAME and D360_PASSWORD) is required with D360_PARTNER_ID"
            )
        return self

    @property
    def has_credentials(self) -> bool:
        return self.api_key is not None or self.username is not None

    @property
    def webhooks_enabled(self) -> bool:
        return (self.webhook_secret is not None or self.webhook_hmac_secret is not None
                or self.webhook_open)

    @property
    def polling_enabled(self) -> bool:
        return self.has_credentials or self.demo

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
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def masked(self) -> dict[str, str]:
        """Effective settings for `--check-config`, secrets masked."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
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
                raise ConfigError(f"D360_CONFIG_FILE: no such file {path}")
            return path
    return None


class ConfigError(Exception):
    """Configuration that cannot start the exporter; the message names the setting."""


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from overrides (CLI), the environment and the config file, or raise
    `ConfigError` with one line per bad setting, each naming its environment variable."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except ValueError as exc:  # raised by sources, e.g. an unreadable TOML file
        raise ConfigError(f"D360_CONFIG_FILE: {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
        message = error["msg"].removeprefix("Value error, ")
        if loc:
            lines.append(f"{ENV_PREFIX}{loc[0].upper()}: {message}")
        else:
            lines.append(message)  # model-level checks name their settings themselves
    return "; ".join(lines)

