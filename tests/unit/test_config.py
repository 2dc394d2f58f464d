"""Configuration fails early and names the setting."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from exporter.__main__ import main
from exporter.config import (
    DEMO_STATE_PATH,
    EXAMPLE_RATE_CARD,
    ConfigError,
    decide_mode,
    load_settings,
)
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
    ({"D360_PARTNER_ID": "p", "D360_API_KEY": "k",
      "D360_WEBHOOK_FORWARD_URL": "http://app.local/hook"}, "D360_WEBHOOK_FORWARD_URL"),
    ({"D360_PARTNER_ID": "p", "D360_API_KEY": "k",
      "D360_WEBHOOK_LISTEN_ADDRESS": "0.0.0.0:10361"}, "D360_WEBHOOK_LISTEN_ADDRESS"),
    ({"D360_WEBHOOK_SECRET": "s", "D360_LISTEN_ADDRESS": "127.0.0.1:9000",
      "D360_WEBHOOK_LISTEN_ADDRESS": "0.0.0.0:9000"}, "D360_WEBHOOK_LISTEN_ADDRESS=0.0.0.0:9000"),
    ({"D360_DEMO": "false"}, "D360_DEMO=false"),
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
    """Without credentials the exporter says first that it will run the demo."""
    assert main(["--check-config"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mode=demo ")
    assert "D360_DEMO=True" in out


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


@pytest.mark.parametrize(("demo", "credentials", "webhook_auth", "mode"), [
    (None, False, False, "demo"),
    (True, False, False, "demo"),
    (True, True, True, "demo"),
    (None, True, False, "polling"),
    (False, True, True, "polling"),
    (None, False, True, "webhook-only"),
    (False, False, True, "webhook-only"),
])
def test_the_mode_follows_explicit_intent(demo, credentials, webhook_auth, mode):
    """D360_DEMO=true is the demo; else credentials poll, webhook auth alone is webhook-only,
    and nothing at all is the demo."""
    assert decide_mode(demo=demo, credentials=credentials, webhook_auth=webhook_auth,
                       partner_id=credentials) == mode


def test_demo_false_with_nothing_to_run_says_what_is_missing():
    """D360_DEMO=false without credentials or webhook auth is an error naming both ways out,
    not a silent demo."""
    with pytest.raises(ValueError, match="D360_DEMO=false") as caught:
        decide_mode(demo=False, credentials=False, webhook_auth=False, partner_id=False)
    for name in ("D360_PARTNER_ID", "D360_API_KEY", "D360_WEBHOOK_SECRET", "D360_WEBHOOK_OPEN"):
        assert name in str(caught.value)


@pytest.mark.parametrize("webhook_auth", [False, True])
def test_a_partner_id_without_credentials_is_an_error_not_a_mode(webhook_auth):
    """A partner id shows that polling was meant: without credentials that is an error, never
    the demo or webhook-only."""
    with pytest.raises(ValueError, match="D360_API_KEY"):
        decide_mode(demo=None, credentials=False, webhook_auth=webhook_auth, partner_id=True)


@pytest.mark.parametrize("address", ["0.0.0.0:10361", "127.0.0.1:20361"])
def test_choosing_the_demos_webhook_port_keeps_the_demo(monkeypatch, address):
    """A webhook address (even its documented default) with no credentials moves the demo's
    receiver and leaves the mode alone."""
    monkeypatch.setenv("D360_WEBHOOK_LISTEN_ADDRESS", address)
    settings = load_settings()
    assert settings.mode == "demo"
    assert settings.webhooks_enabled
    assert settings.webhook_listen_address == address


@pytest.mark.parametrize(("env", "mode"), [
    ({"D360_LISTEN_ADDRESS": "127.0.0.1:1"}, "demo"),
    ({"D360_STATE_PATH": "elsewhere.sqlite3"}, "demo"),
    ({"D360_WEBHOOK_FORWARD_URL": "https://app.test/hook"}, "demo"),
    ({"D360_WEBHOOK_SECRET": "s", "D360_WEBHOOK_LISTEN_ADDRESS": "127.0.0.1:1"}, "webhook-only"),
    ({"D360_PARTNER_ID": "p", "D360_API_KEY": "k", "D360_LISTEN_ADDRESS": "127.0.0.1:1"},
     "polling"),
])
def test_addresses_and_paths_never_pick_the_mode(monkeypatch, env, mode):
    """The same mode with or without an address, path or forward URL added."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings().mode == mode


def test_demo_true_overrides_credentials(monkeypatch):
    """D360_DEMO=true runs the demo even with credentials (which the demo does not use)."""
    monkeypatch.setenv("D360_DEMO", "true")
    monkeypatch.setenv("D360_PARTNER_ID", "p")
    monkeypatch.setenv("D360_API_KEY", "k")
    assert load_settings().mode == "demo"


def test_demo_defaults_are_the_settings_it_uses(monkeypatch, tmp_path):
    """The demo's own state file and the example rate card, unless set; outside the demo, the
    plain defaults."""
    demo = load_settings()
    assert (demo.state_path, demo.webhook_rate_card) == (DEMO_STATE_PATH, EXAMPLE_RATE_CARD)
    monkeypatch.setenv("D360_STATE_PATH", str(tmp_path / "mine.sqlite3"))
    assert load_settings().state_path == tmp_path / "mine.sqlite3"
    monkeypatch.delenv("D360_STATE_PATH")
    monkeypatch.setenv("D360_WEBHOOK_SECRET", "s")
    webhook_only = load_settings()
    assert webhook_only.state_path == Path("whatsapp-usage-exporter.sqlite3")
    assert webhook_only.webhook_rate_card is None


def check_config_lines(capsys) -> list[str]:
    assert main(["--check-config"]) == 0
    return list(capsys.readouterr().out.splitlines())


def test_check_config_prints_what_the_demo_uses(monkeypatch, capsys, tmp_path):
    """The demo's state path and rate card, the simulator in place of the API settings, the
    receiver's address and its per-run secret: what the demo will do, mode first."""
    monkeypatch.chdir(tmp_path)
    lines = check_config_lines(capsys)
    assert lines[0].startswith("mode=demo ")
    assert lines[1] == "webhooks=receiving at 0.0.0.0:10361"
    assert f"D360_STATE_PATH={DEMO_STATE_PATH}" in lines
    assert f"D360_WEBHOOK_RATE_CARD={EXAMPLE_RATE_CARD}" in lines
    assert "D360_API_URL=(the built-in simulator, on a free port of 127.0.0.1)" in lines
    assert "D360_WEBHOOK_HMAC_SECRET=(made for this run; the simulator signs with it)" in lines
    assert not any(line.startswith(("D360_USERNAME=", "D360_PASSWORD=")) for line in lines)


def test_check_config_leaves_out_a_receiver_that_is_off(monkeypatch, capsys, tmp_path):
    """Polling without webhook auth: it says the receiver is off and why, and prints none of
    the receiver's settings."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("D360_PARTNER_ID", "pa")
    monkeypatch.setenv("D360_API_KEY", "k")
    lines = check_config_lines(capsys)
    assert lines[0] == ("mode=polling: the 360dialog Partner API at "
                        "https://hub.360dialog.io/api/v2 for partner pa")
    assert lines[1].startswith("webhooks=off: no D360_WEBHOOK_SECRET")
    assert not any(line.startswith("D360_WEBHOOK_") for line in lines)
    assert "D360_STATE_PATH=whatsapp-usage-exporter.sqlite3" in lines


def test_check_config_in_webhook_only_mode_leaves_out_the_poller(monkeypatch, capsys, tmp_path):
    """Webhook-only: no API, budget or selection settings, which nothing would use."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("D360_WEBHOOK_SECRET", "s")
    lines = check_config_lines(capsys)
    assert lines[0].startswith("mode=webhook-only: ")
    assert "D360_WEBHOOK_LISTEN_ADDRESS=0.0.0.0:10361" in lines
    assert not any(line.startswith(("D360_API_URL=", "D360_LIMIT_", "D360_SHARD_"))
                   for line in lines)


def test_check_config_checks_the_state_path(monkeypatch, capsys, tmp_path):
    """A directory as the state path fails --check-config with one line naming the setting;
    missing parent directories are announced, not created."""
    monkeypatch.setenv("D360_STATE_PATH", str(tmp_path))
    assert main(["--check-config"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"config error: D360_STATE_PATH={tmp_path}: is a directory; give a file "
                   f"path, such as {tmp_path / 'state.sqlite3'}"]
    monkeypatch.setenv("D360_STATE_PATH", str(tmp_path / "a" / "b" / "state.sqlite3"))
    lines = check_config_lines(capsys)
    assert f"state=will create {tmp_path / 'a'} for {tmp_path / 'a' / 'b' / 'state.sqlite3'}" \
        in lines
    assert not (tmp_path / "a").exists()


def config_file(monkeypatch, tmp_path, text: str) -> Path:
    path: Path = tmp_path / "exporter.toml"
    path.write_text(text)
    monkeypatch.setenv("D360_CONFIG_FILE", str(path))
    return path


def test_a_misspelt_key_in_the_file_is_named_as_written(monkeypatch, tmp_path):
    """A key the file misspells is reported with the file, its line and the key as written,
    with the nearest setting, not as an environment variable."""
    path = config_file(monkeypatch, tmp_path,
                       'partner_id = "pa"\napi_key = "k"\nLimit_Usage_Chanel = "5/3600"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (f"{path}:3: Limit_Usage_Chanel: not a setting "
                                 "(did you mean limit_usage_channel?)")


def test_a_bad_value_from_the_file_names_the_file_and_key(monkeypatch, tmp_path):
    """A value the file gives is reported at its line; the same value from the environment
    (which wins) names the environment variable."""
    path = config_file(monkeypatch, tmp_path, '# budgets\n\nlimit_usage_waba = "lots"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"{path}:3: limit_usage_waba: must be count/seconds")
    monkeypatch.setenv("D360_LIMIT_USAGE_WABA", "many")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith("D360_LIMIT_USAGE_WABA: must be count/seconds")


def test_a_toml_syntax_error_names_the_file_line_and_key(monkeypatch, tmp_path):
    """An invalid line is reported with the file, the line and the key on it, and an unquoted
    limit gets the quoted spelling."""
    path = config_file(monkeypatch, tmp_path,
                       'partner_id = "pa"\nlimit_usage_waba = 100/3600  # an hour\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{path}:2: limit_usage_waba: not valid TOML: ")
    assert message.endswith('text needs quotes: limit_usage_waba = "100/3600"')


def test_a_toml_error_outside_a_key_names_the_file_and_line(monkeypatch, tmp_path):
    """A broken table header has no key: the file and line are named."""
    path = config_file(monkeypatch, tmp_path, 'partner_id = "pa"\n[limits\n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:2: not valid TOML: "):
        load_settings()


def test_an_unreadable_config_file_names_the_setting(monkeypatch, tmp_path):
    """A config file that is not UTF-8 text stops start-up naming D360_CONFIG_FILE."""
    path = tmp_path / "exporter.toml"
    path.write_bytes(b"partner_id = \"\xff\"\n")
    monkeypatch.setenv("D360_CONFIG_FILE", str(path))
    with pytest.raises(ConfigError, match=rf"^D360_CONFIG_FILE={re.escape(str(path))}: "):
        load_settings()


def test_a_combination_from_the_file_says_where_the_file_sets_it(monkeypatch, tmp_path):
    """A check across settings names them as environment variables and adds where the file
    sets those it sets."""
    path = config_file(monkeypatch, tmp_path, "shard_count = 2\n\nShard_Index = 2\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == ("D360_SHARD_INDEX (2) must be below D360_SHARD_COUNT (2) "
                                 f"(set as Shard_Index at {path}:3, shard_count at {path}:1)")
