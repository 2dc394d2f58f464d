"""The state path and the listeners are checked on the machine, each failure naming its setting."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from exporter.config import ConfigError
from exporter.preflight import (
    bind_failure,
    bind_listener,
    prepare_state_path,
    state_directories_to_create,
)


def test_an_existing_state_file_needs_nothing(tmp_path):
    """A writable state file in a writable directory is fine as it is."""
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"")
    assert state_directories_to_create(path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.sqlite3"]  # probe removed


def test_missing_directories_are_listed_outermost_first(tmp_path):
    """The directories a start would create, without creating them."""
    path = tmp_path / "a" / "b" / "state.sqlite3"
    assert state_directories_to_create(path) == [tmp_path / "a", tmp_path / "a" / "b"]
    assert not (tmp_path / "a").exists()


def test_a_directory_is_not_a_state_file(tmp_path):
    """A directory given as the state path is refused, suggesting a file in it."""
    with pytest.raises(ConfigError, match=rf"^D360_STATE_PATH={tmp_path}: is a directory; "):
        state_directories_to_create(tmp_path)


def test_a_file_where_a_directory_is_needed_is_named(tmp_path):
    """A file in the way of the state file's directory is named."""
    (tmp_path / "plain").write_text("")
    path = tmp_path / "plain" / "sub" / "state.sqlite3"
    with pytest.raises(ConfigError) as caught:
        state_directories_to_create(path)
    assert str(caught.value) == f"D360_STATE_PATH={path}: {tmp_path / 'plain'} is not a directory"


def test_a_state_path_that_is_neither_file_nor_directory_is_refused(tmp_path):
    """A FIFO (or device) is not a database."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        state_directories_to_create(fifo)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only directories; the "
                    "end-to-end test uses a read-only mount instead")
def test_a_read_only_directory_is_named(tmp_path):
    """A directory the process cannot write in is refused before SQLite tries."""
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match=rf"cannot write in {tmp_path}: Permission denied"):
            state_directories_to_create(tmp_path / "state.sqlite3")
    finally:
        tmp_path.chmod(0o755)


def test_preparing_creates_the_directories_and_says_so(tmp_path, capsys):
    """A start creates the missing directories and logs which."""
    from exporter.logging import configure  # noqa: PLC0415 - the test's own log set-up

    configure("json", "info")
    path = tmp_path / "a" / "b" / "state.sqlite3"
    prepare_state_path(path)
    assert (tmp_path / "a" / "b").is_dir()
    err = capsys.readouterr().err
    assert '"event": "state_directory_created"' in err
    assert str(tmp_path / "a" / "b") in err
    prepare_state_path(path)
    assert "state_directory_created" not in capsys.readouterr().err  # nothing new to say


@pytest.mark.parametrize(("exc", "said"), [
    (OSError(errno.EADDRINUSE, "Address already in use"), "address already in use"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "host does not resolve"),
    (OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"),
     "not an address of this machine"),
    (OSError(errno.EACCES, "Permission denied"),
     "permission denied (ports below 1024 need privileges)"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), "Network is unreachable"),
])
def test_bind_failures_are_said_plainly(exc, said):
    """Each bind failure reads as the reason a user can act on."""
    assert bind_failure(exc) == said


def test_a_port_in_use_names_the_setting_and_value():
    """Binding a listener on a taken port fails with the setting, its value and the reason."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            bind_listener("D360_LISTEN_ADDRESS", f"127.0.0.1:{port}", ("127.0.0.1", port))
    assert str(caught.value) == f"D360_LISTEN_ADDRESS=127.0.0.1:{port}: address already in use"


def test_a_free_port_is_bound(tmp_path: Path):
    """A listener on a free port is a listening socket."""
    sock = bind_listener("D360_LISTEN_ADDRESS", "127.0.0.1:0", ("127.0.0.1", 0))
    with sock:
        assert sock.getsockname()[1] > 0
