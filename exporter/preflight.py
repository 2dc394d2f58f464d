"""What the settings point at on this machine: the state file's place and the two listeners.

`--check-config` checks the state path (and that the listen hosts resolve); a real start checks
it too, creates missing directories and says so in the log, and binds both listeners before it
loads anything, so a port in use or a host that does not resolve ends the start with one line
naming the setting (`ConfigError`), not a traceback.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import structlog

from exporter.config import ConfigError
from exporter.serving import bind_socket

log = structlog.get_logger("exporter")

SETTING = "D360_STATE_PATH"


def state_directories_to_create(path: Path) -> list[Path]:
    """The directories a start will create for the state file, outermost first; or a
    `ConfigError` naming the setting when the file cannot be used there."""
    if str(path) == ":memory:":
        return []
    named = f"{SETTING}={path}"
    if path.is_dir():
        raise ConfigError(f"{named}: is a directory; give a file path, such as "
                          f"{path / 'state.sqlite3'}")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise ConfigError(f"{named}: not a regular file")
        try:
            with path.open("r+b"):
                pass
        except OSError as exc:
            raise ConfigError(f"{named}: cannot open it for writing: {exc.strerror}") from None
        # SQLite keeps its -wal and -shm files beside the database.
        _check_writable(named, path.parent)
        return []
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{named}: {parent} is not a directory")
    _check_writable(named, parent)
    return missing[::-1]


def _check_writable(named: str, directory: Path) -> None:
    """Try it: permission bits say nothing of read-only mounts, and root passes them all."""
    probe = directory / f".whatsapp-usage-exporter-check-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise ConfigError(f"{named}: cannot write in {directory}: {exc.strerror}") from None
    os.close(fd)
    probe.unlink()


def prepare_state_path(path: Path) -> None:
    """Check the state path and create its missing directories, saying so in the log."""
    missing = state_directories_to_create(path)
    for directory in missing:
        try:
            directory.mkdir()
        except FileExistsError:
            continue  # another process made it meanwhile
        except OSError as exc:
            raise ConfigError(f"{SETTING}={path}: cannot create {directory}: "
                              f"{exc.strerror}") from None
    if missing:
        log.info("state_directory_created", path=str(missing[-1]),
                 created=[str(d) for d in missing], state_path=str(path))


def bind_failure(exc: OSError) -> str:
    """What a failed bind means, in the words of a config error."""
    if isinstance(exc, socket.gaierror):
        return "host does not resolve"
    reasons = {
        errno.EADDRINUSE: "address already in use",
        errno.EADDRNOTAVAIL: "not an address of this machine",
        errno.EACCES: "permission denied (ports below 1024 need privileges)",
    }
    return reasons.get(exc.errno or 0, exc.strerror or str(exc))


def bind_listener(setting: str, value: str, address: tuple[str, int]) -> socket.socket:
    """`bind_socket`, failing with one line that names the setting and its value."""
    try:
        return bind_socket(*address)
    except OSError as exc:
        raise ConfigError(f"{setting}={value}: {bind_failure(exc)}") from None


def check_resolves(setting: str, value: str, host: str) -> None:
    """For `--check-config`: the listen host resolves (a bind would fail otherwise)."""
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ConfigError(f"{setting}={value}: host does not resolve") from None
