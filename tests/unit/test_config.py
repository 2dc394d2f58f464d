"""Configuration fails early and names the setting."""

from __future__ import annotations

import os

import pytest

from exporter.__main__ import main
from exporter.config import ConfigError, load_settings
from exporter.domain import Limit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("D360_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(("env", "named"), [
    ({"D360_LIMIT_USAGE_CHANNEL": "10"}, "D360_LIMIT_USAGE_CHANNEL"),
    ({"D360_LIMIT_USAGE_WABA": "0/3600"}, "D360_LIMIT_USAGE_WABA"),
    ({"D360_LISTEN_ADDRESS": "nowhere"}, "D360_LISTEN_ADDRESS"),
    ({"D360_LOG_FORMAT": "xml"}, "D360_LOG_FORMAT"),
    ({"D360_SHARD_COUNT": "2", "D360_SHARD_INDEX": "2"}, "D360_SHARD_INDEX"),
    ({"D360_USERNAME": "me@example.com"}, "D360_PASSWORD"),
    ({"D360_API_KEY": "k"}, "D360_PARTNER_ID"),
    ({"D360_PARTNER_ID": "p"}, "D360_API_KEY"),
    ({"D360_API_URL": "ftp://x"}, "D360_API_URL"),
    ({"D360_CONFIG_FILE": "/nonexistent.toml"}, "D360_CONFIG_FILE"),
    ({"D360_WEBHOOK_SECRET": "s", "D360_WEBHOOK_RATE_CARD": "/nonexistent.toml"},
     "D360_WEBHOOK_RATE_CARD"),
    ({"D360_WEBHOOK_SECRET": "s", "D360_WEBHOOK_FORWARD_URL": "app.local/hook"},
     "D360_WEBHOOK_FORWARD_URL"),
    ({"D360_WEBHOOK_FORWARD_URL": "http://app.local/hook"}, "D360_WEBHOOK_FORWARD_URL"),
    ({"D360_WEBHOOK_SECRET": "s", "D360_WEBHOOK_FORWARD_HEADERS": "X-Ok,Bad Header"},
     "D360_WEBHOOK_FORWARD_HEADERS"),
    ({"D360_NO_SUCH_SETTING": "1"}, None),
])
def test_bad_settings_name_themselves(monkeypatch, env, named):
    """Each bad value stops start-up with a message naming its environment variable."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if named is None:
        load_settings()  # unknown D360_ variables are ignored by the env source
        return
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_limits_parse_as_count_per_window():
    """'10/3600' is ten calls in any hour."""
    assert Limit.parse(" 5 / 30 ") == Limit(5, 30.0)


def test_config_file_is_read_and_env_wins(monkeypatch, tmp_path):
    """The TOML file supplies settings; the environment overrides it."""
    path = tmp_path / "exporter.toml"
    path.write_text('partner_id = "file"\napi_key = "k"\nlimit_usage_waba = "100/3600"\n')
    monkeypatch.setenv("D360_CONFIG_FILE", str(path))
    monkeypatch.setenv("D360_PARTNER_ID", "env")
    s = load_settings()
    assert (s.partner_id, s.limit_usage_waba) == ("env", Limit(100, 3600))


def test_check_config_masks_secrets(monkeypatch, capsys):
    """--check-config prints every setting and never a secret's value."""
    monkeypatch.setenv("D360_PARTNER_ID", "pa")
    monkeypatch.setenv("D360_API_KEY", "super-secret-key")
    assert main(["--check-config"]) == 0
    out = capsys.readouterr().out
    assert "super-secret-key" not in out
    assert "D360_API_KEY=********" in out
    assert "D360_LIMIT_USAGE_CHANNEL=10/3600" in out


def test_check_config_hides_tokens_in_the_forward_url(monkeypatch, capsys):
    """A token in the forward URL's user info or query is not printed."""
    monkeypatch.setenv("D360_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("D360_WEBHOOK_FORWARD_URL", "https://bot:pw@app.test/hook?token=abc")
    assert main(["--check-config"]) == 0
    out = capsys.readouterr().out
    assert "D360_WEBHOOK_FORWARD_URL=https://****@app.test/hook?****" in out
    assert "pw" not in out.replace("D360_PASSWORD", "")
    assert "abc" not in out


def test_bad_config_exits_2_with_one_line(monkeypatch, capsys):
    """A bad setting ends the process with status 2 and one line on stderr."""
    monkeypatch.setenv("D360_LIMIT_CLIENT_BALANCE", "five per thirty")
    assert main(["--check-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("config error: D360_LIMIT_CLIENT_BALANCE")


def test_no_credentials_means_demo(capsys):
    """Without credentials the exporter says it will run the demo."""
    assert main(["--check-config"]) == 0
    assert "D360_DEMO=True" in capsys.readouterr().out


def test_a_broken_rate_card_names_the_setting_and_the_entry(monkeypatch, tmp_path):
    """A card with a bad price stops start-up naming the setting, the file and the entry."""
    card = tmp_path / "card.toml"
    card.write_text('currency = "USD"\n[markets.DE]\ncalling_codes = ["49"]\nmarketing = -1\n')
    monkeypatch.setenv("D360_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("D360_WEBHOOK_RATE_CARD", str(card))
    with pytest.raises(ConfigError, match=r"D360_WEBHOOK_RATE_CARD: .*card.toml: "
                                          r"markets.DE.marketing"):
        load_settings()


def test_the_api_base_loses_its_trailing_slash_the_forward_url_is_kept(monkeypatch):
    """Paths are appended to the API base; the application's URL is used exactly as given."""
    monkeypatch.setenv("D360_API_URL", "https://hub.example.test/api/v2/")
    monkeypatch.setenv("D360_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("D360_WEBHOOK_FORWARD_URL", "https://app.example.test/hook/")
    settings = load_settings()
    assert settings.api_url == "https://hub.example.test/api/v2"
    assert settings.webhook_forward_url == "https://app.example.test/hook/"
