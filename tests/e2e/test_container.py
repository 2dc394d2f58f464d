"""The container image, built and run with the real tools: hadolint, debootstrap and buildah.

No registry is reachable, so the base image is a Debian bookworm made with debootstrap and
imported into a private buildah store (vfs driver) under a cache directory; the Dockerfile gets
it through `BASE_IMAGE`. A warm cache reuses the base image, a fresh machine (CI) makes it once.
pip inside the build gets a wheelhouse the host resolved (see the Dockerfile's `WHEELHOUSE`).
`WUE_CONTAINER_CACHE` moves the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import tools
from tests.e2e.conftest import ROOT, free_port, wait_http

pytestmark = pytest.mark.e2e

CACHE = Path(os.environ.get("WUE_CONTAINER_CACHE", "/var/tmp/whatsapp-usage-exporter-e2e"))
# Bump to rebuild the cached debootstrap tarball and base image.
BASE_KEY = "bookworm-minbase-py3-1"
BASE_IMAGE = f"localhost/wue-base:{BASE_KEY}"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
VENV = "opt/whatsapp-usage-exporter"
STATE_DIR = "var/lib/whatsapp-usage-exporter"
UID = 10360
NAME_PREFIX = "wue-e2e-"


def require_tool(name: str) -> str:
    """The tool's path; under CI a missing tool fails the test (CI installs what it uses)."""
    path = tools.binary(name)
    if name in {"buildah", "debootstrap"} and os.geteuid() != 0:
        tools.unavailable(f"{name} as root (vfs storage, chroot isolation)")
    return path


def run(args: list[str], timeout: float = 300) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


@dataclass
class Buildah:
    binary: str

    def cmd(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(CACHE / "storage"), "--runroot", str(CACHE / "runroot"),
                "--storage-driver", "vfs", *args]

    def __call__(self, *args: str, timeout: float = 300) -> str:
        return run(self.cmd(*args), timeout=timeout)

    def has_image(self, name: str) -> bool:
        return subprocess.run(self.cmd("inspect", "--type", "image", name), capture_output=True,
                              check=False).returncode == 0

    def image_config(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self("inspect", "--type", "image", name))["OCIv1"]["config"])

    def remove_stale_containers(self) -> None:
        """Containers left by an earlier run that died (its pid is in the name) take disk."""
        for name in self("containers", "--format", "{{.ContainerName}}").split():
            m = re.fullmatch(re.escape(NAME_PREFIX) + r"(\d+)-\w+", name)
            if m and not Path(f"/proc/{m.group(1)}").exists():
                self("rm", name)

    @contextlib.contextmanager
    def container(self, image: str, label: str) -> Iterator[tuple[str, Path]]:
        """A working container from the image and its mounted root filesystem."""
        name = f"{NAME_PREFIX}{os.getpid()}-{label}"
        self("from", "--name", name, image)
        try:
            yield name, Path(self("mount", name).strip())
        finally:
            subprocess.run(self.cmd("umount", name), capture_output=True, check=False)
            subprocess.run(self.cmd("rm", name), capture_output=True, check=False)


def make_base_image(buildah: Buildah) -> None:
    """Debian bookworm with python3 and venv, from the cached tarball or a fresh debootstrap."""
    if buildah.has_image(BASE_IMAGE):
        return
    tarball = CACHE / f"base-{BASE_KEY}.tar"
    if not tarball.exists():
        debootstrap = require_tool("debootstrap")
        rootfs = CACHE / f"rootfs-{BASE_KEY}"
        shutil.rmtree(rootfs, ignore_errors=True)
        run([debootstrap, "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             "bookworm", str(rootfs), DEBIAN_MIRROR], timeout=900)
        # What slim images leave out too: package caches and lists, docs, man pages, locales.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
                     "usr/share/man", "usr/share/locale", "usr/share/info"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file() or entry.is_symlink():
                    entry.unlink()
                elif entry.name != "partial":
                    shutil.rmtree(entry)
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(rootfs), "-cf", str(partial), "."])
        partial.rename(tarball)
        shutil.rmtree(rootfs)
    container = buildah("from", "scratch").strip()
    try:
        buildah("add", container, str(tarball), "/")
        buildah("config", "--cmd", "/bin/sh", container)
        buildah("commit", "--quiet", container, BASE_IMAGE)
    finally:
        buildah("rm", container)


def make_wheelhouse(dest: Path) -> None:
    """Wheels for the project's dependencies and build backend, resolved by the host's pip."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(dest), *wanted])


@dataclass
class Image:
    buildah: Buildah
    name: str
    timings: dict[str, float]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    buildah = Buildah(require_tool("buildah"))
    CACHE.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent runs share one base image
        buildah.remove_stale_containers()
        make_base_image(buildah)
    timings["base"] = time.monotonic() - started
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    make_wheelhouse(wheelhouse)
    timings["wheelhouse"] = time.monotonic() - started - timings["base"]
    name = f"localhost/whatsapp-usage-exporter:e2e-{os.getpid()}"
    started = time.monotonic()
    buildah("bud", "--isolation", "chroot", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
            "--volume", f"{wheelhouse}:/wheelhouse:ro", "--build-arg", "WHEELHOUSE=/wheelhouse",
            "--file", str(ROOT / "Dockerfile"), "--tag", name, str(ROOT), timeout=600)
    timings["build"] = time.monotonic() - started
    try:
        yield Image(buildah, name, timings)
    finally:
        subprocess.run(buildah.cmd("rmi", name), capture_output=True, check=False)


def test_dockerfile_is_hadolint_clean() -> None:
    """The Dockerfile passes hadolint with no findings."""
    proc = subprocess.run([require_tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_is_configured_to_run_unprivileged_with_state_on_a_volume(image: Image) -> None:
    """The image runs its console script as 10360:10360 with JSON logs and state on a volume."""
    config = image.buildah.image_config(image.name)
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["whatsapp-usage-exporter"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["D360_STATE_PATH"] == f"/{STATE_DIR}/state.sqlite3"
    assert env["D360_LOG_FORMAT"] == "json"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert set(config["Volumes"]) == {f"/{STATE_DIR}"}
    assert set(config["ExposedPorts"]) == {"10360/tcp", "10361/tcp"}
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "whatsapp-usage-exporter"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_image_holds_a_byte_compiled_venv_with_the_rate_card(image: Image) -> None:
    """The runtime image has the installed package, its rate card and prebuilt pyc, no sources."""
    with image.buildah.container(image.name, "files") as (_, rootfs):
        packages = list((rootfs / VENV).glob("lib/python3*/site-packages/exporter"))
        assert len(packages) == 1, packages
        package = packages[0]
        cards = list((package / "webhooks" / "ratecards").glob("*.toml"))
        assert cards, "no rate card TOML in the image"
        for card in cards:
            tomllib.loads(card.read_text())
        assert not (rootfs / "src").exists(), "the build context leaked into the runtime stage"
        assert not list(rootfs.glob("**/*.sqlite3")), "a state file was baked into the image"
        tag = "cpython-" + package.parent.parent.name.removeprefix("python").replace(".", "")
        for source in package.rglob("*.py"):
            pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
            # PEP 552 flags 0b01: hash-based and unchecked, so it is valid whatever the mtimes.
            assert pyc.read_bytes()[4:8] == b"\x01\0\0\0", pyc
        state = (rootfs / STATE_DIR).stat()
        assert (state.st_uid, state.st_gid) == (UID, UID)


def snapshot(rootfs: Path) -> dict[str, tuple[int, ...]]:
    """Every path outside the state directory with its type, mode, owner and, for files, content
    stamps; a directory's mtime is left out (entries added or removed show up themselves)."""
    skip = {"proc", "sys", "dev", STATE_DIR}
    found: dict[str, tuple[int, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        rel = Path(dirpath).relative_to(rootfs)
        dirnames[:] = [d for d in dirnames if (rel / d).as_posix() not in skip]
        for name in dirnames + filenames:
            st = os.lstat(Path(dirpath) / name)
            facts: tuple[int, ...] = (st.st_mode, st.st_uid, st.st_gid)
            if not stat.S_ISDIR(st.st_mode):
                facts += (st.st_size, st.st_mtime_ns)
            found[(rel / name).as_posix()] = facts
    return found


def changed(before: dict[str, tuple[int, ...]], after: dict[str, tuple[int, ...]]) -> set[str]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def python_descendant(pid: int, timeout: float = 30) -> int:
    """The Python process under `buildah run` (buildah's own helpers sit between)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry.name))
        todo = list(children.get(pid, []))
        while todo:
            child = todo.pop()
            with contextlib.suppress(OSError):
                if Path(os.readlink(f"/proc/{child}/exe")).name.startswith("python"):
                    return child
            todo.extend(children.get(child, []))
        time.sleep(0.1)
    raise AssertionError(f"no python process under pid {pid} within {timeout}s")


def proc_ids(pid: int) -> tuple[str, str]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines())
    return status["Uid"].split()[0], status["Gid"].split()[0]


def test_demo_container_serves_metrics_as_10360_and_writes_only_its_state(
        image: Image, tmp_path: Path) -> None:
    """The image's entrypoint, with no credentials, serves whatsapp_ series as UID 10360, stops
    cleanly on SIGTERM, and writes nothing outside its state directory."""
    buildah = image.buildah
    config = buildah.image_config(image.name)
    entrypoint = list(config["Entrypoint"])
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    os.chown(state, UID, UID)
    with buildah.container(image.name, "run") as (container, rootfs):
        # A first run both checks the user and is the control: a write inside the container
        # must show up in the comparison, or "nothing changed" would prove nothing.
        before = snapshot(rootfs)
        ids = buildah("run", "--isolation", "chroot", container, "--",
                      "sh", "-c", "id -u; id -g; touch /tmp/wue-probe").split()
        assert ids == [str(UID), str(UID)]
        baseline = snapshot(rootfs)
        assert "tmp/wue-probe" in changed(before, baseline)

        port, hook_port = free_port(), free_port()
        log = tmp_path / "container.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                buildah.cmd("run", "--isolation", "chroot",
                            "--volume", f"{state}:/{STATE_DIR}",
                            "--env", "D360_DEMO=true",
                            "--env", f"D360_LISTEN_ADDRESS=127.0.0.1:{port}",
                            "--env", f"D360_WEBHOOK_LISTEN_ADDRESS=127.0.0.1:{hook_port}",
                            container, "--", *entrypoint),
                stdout=out, stderr=subprocess.STDOUT)
            try:
                started = time.monotonic()
                wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
                ready = time.monotonic() - started
                deadline = time.monotonic() + 30
                while "whatsapp_channel_info{" not in (
                        body := httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text):
                    assert time.monotonic() < deadline, body[-2000:]
                    time.sleep(0.2)
                assert "whatsapp_exporter_build_info" in body
                exporter = python_descendant(popen.pid)
                assert proc_ids(exporter) == (str(UID), str(UID))
                # buildah run does not forward SIGTERM: signal the exporter as a runtime would.
                os.kill(exporter, signal.SIGTERM)
                code = popen.wait(30)
            finally:
                if popen.poll() is None:
                    popen.kill()
                    popen.wait(10)
        text = log.read_text()
        assert code == 0, text[-3000:]
        assert '"exporter_stopped"' in text
        assert changed(baseline, snapshot(rootfs)) == set(), "wrote outside the state directory"
    assert (state / "state.sqlite3").is_file(), sorted(p.name for p in state.iterdir())
    assert not (state / "whatsapp-usage-exporter-demo.sqlite3").exists()
    print(f"timings: {image.timings | {'ready': ready}}")  # shown with -s
