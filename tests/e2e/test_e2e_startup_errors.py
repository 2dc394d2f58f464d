"""A start that cannot work ends with one `config error:` line naming the setting, exit 2: a
port in use on either listener, a host that does not resolve, an unusable state path, and
D360_DEMO=false with nothing to run. A webhook port alone keeps the demo."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Proc, base_env, free_port, wait_http


def run(env: dict[str, str], *args: str, wrap: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    result = subprocess.run([*wrap, sys.executable, "-m", "exporter", *args], env=env,
                            capture_output=True, timeout=60, check=False, text=True)
    return result.returncode, result.stderr.splitlines()


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_metrics_port_in_use_is_one_line(tmp_path, taken_port):
    """The metrics listener's port taken: one line naming D360_LISTEN_ADDRESS, exit 2."""
    env = base_env(tmp_path) | {"D360_LISTEN_ADDRESS": f"127.0.0.1:{taken_port}"}
    assert run(env) == (2, [f"config error: D360_LISTEN_ADDRESS=127.0.0.1:{taken_port}: "
                            "address already in use"])


def test_a_webhook_port_in_use_is_one_line(tmp_path, taken_port):
    """The demo's webhook receiver's port taken: one line naming the webhook setting, before
    the demo starts or the state is touched."""
    env = base_env(tmp_path) | {"D360_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
                                "D360_WEBHOOK_LISTEN_ADDRESS": f"127.0.0.1:{taken_port}"}
    assert run(env) == (2, [f"config error: D360_WEBHOOK_LISTEN_ADDRESS=127.0.0.1:"
                            f"{taken_port}: address already in use"])
    assert not (tmp_path / "state.sqlite3").exists()


@pytest.mark.parametrize("args", [(), ("--check-config",)])
def test_a_listen_host_that_does_not_resolve_is_one_line(tmp_path, args):
    """A listen host that does not resolve ('.invalid' never does): one line, exit 2, at start
    and in --check-config alike."""
    env = base_env(tmp_path) | {"D360_LISTEN_ADDRESS": "exporter.invalid:0"}
    assert run(env, *args) == (2, ["config error: D360_LISTEN_ADDRESS=exporter.invalid:0: "
                                   "host does not resolve"])


def test_a_directory_as_state_path_is_one_line(tmp_path):
    """A directory given as D360_STATE_PATH stops the start with one line."""
    env = base_env(tmp_path) | {"D360_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
                                "D360_STATE_PATH": str(tmp_path)}
    code, err = run(env)
    assert (code, len(err)) == (2, 1)
    assert err[0].startswith(f"config error: D360_STATE_PATH={tmp_path}: is a directory")


def _read_only_wrapper() -> tuple[str, ...]:
    """A private mount namespace, in which a read-only tmpfs can be mounted (as root, or as a
    user mapped to root in a user namespace); skip where neither is allowed."""
    unshare = shutil.which("unshare")
    wrap = ("unshare", "--mount", "--propagation", "private",
            *(() if os.geteuid() == 0 else ("--map-root-user",)))
    if unshare is None or subprocess.run([*wrap, "true"], capture_output=True,
                                         check=False).returncode != 0:
        pytest.skip("no mount namespace here for a read-only file system")
    return wrap


@pytest.mark.parametrize("args", [("--check-config",), ()])
def test_a_read_only_state_directory_is_one_line(tmp_path, args):
    """A state path on a read-only file system (where even root cannot write) is refused by
    --check-config and by a start, naming the setting and the directory."""
    wrap = _read_only_wrapper()
    ro = Path(tempfile.mkdtemp(dir=tmp_path))
    state = ro / "sub" / "state.sqlite3"
    env = base_env(tmp_path) | {"D360_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
                                "D360_STATE_PATH": str(state)}
    mounted = (*wrap, "sh", "-c", f'mount -t tmpfs -o ro,size=1m tmpfs "{ro}" && exec "$@"',
               "sh")
    assert run(env, *args, wrap=mounted) == (
        2, [f"config error: D360_STATE_PATH={state}: cannot write in {ro}: "
            "Read-only file system"])


def test_demo_false_without_credentials_is_one_line(tmp_path):
    """D360_DEMO=false with no credentials and no webhook secret is an error, not a demo."""
    env = base_env(tmp_path) | {"D360_DEMO": "false",
                                "D360_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}"}
    code, err = run(env)
    assert (code, len(err)) == (2, 1)
    assert err[0].startswith("config error: D360_DEMO=false: no Partner API credentials")


def test_a_webhook_port_alone_moves_the_demos_receiver(tmp_path):
    """With no credentials, choosing the webhook port (and a state path in new directories)
    still runs the demo, its receiver on that port; the log says the directories were made."""
    port, hook_port = free_port(), free_port()
    state = tmp_path / "new" / "dir" / "state.sqlite3"
    env = base_env(tmp_path) | {"D360_LISTEN_ADDRESS": f"127.0.0.1:{port}",
                                "D360_WEBHOOK_LISTEN_ADDRESS": f"127.0.0.1:{hook_port}",
                                "D360_STATE_PATH": str(state)}
    proc = Proc([sys.executable, "-m", "exporter"], env, tmp_path / "exporter.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=30)
    finally:
        code = proc.stop()
    assert code == 0
    events = {line["event"]: line for line in map(json.loads, proc.log.read_text().splitlines())}
    assert events["state_directory_created"]["created"] == [str(tmp_path / "new"),
                                                            str(state.parent)]
    assert events["exporter_started"]["mode"].startswith("DEMO MODE")
    assert events["exporter_started"]["webhook_listen"] == f"http://127.0.0.1:{hook_port}"
    assert state.is_file()
