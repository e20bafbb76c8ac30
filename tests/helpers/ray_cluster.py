"""A real Ray head on loopback for tests: ``ray start --head --block`` in its own session, stopped by its pid.

Never ``ray stop``: it kills every Ray process on the machine, other people's included. The head runs in a
new session, so SIGTERM to it (then SIGKILL to its own process group) stops exactly this cluster.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# For `ray start` and for every driver that connects to it.
ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Keeps every Ray address on 127.0.0.1 (otherwise Ray swaps loopback for the machine's outward address).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Ray turns token authentication on when ~/.ray/auth_token exists; pinned so both sides agree.
    "RAY_AUTH_MODE": "disabled",
    # SIGTERM to `ray start --block` would first drain the node for up to 30 s.
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
}


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL (a CI timeout), so the head stops too."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # its exit handler stops the GCS, raylet and workers it started
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of this cluster still alive: its own session only
    proc.wait()


def _start(num_cpus: int, temp_dir: Path, timeout: float, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [
        ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
        f"--num-cpus={num_cpus}", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    log = open(temp_dir.with_suffix(".log"), "wb")
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **ENV, **env},
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    deadline = time.monotonic() + timeout
    address = f"127.0.0.1:{port}"
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {proc.returncode}: {_tail(log.name)}")
            if "Ray runtime started" in Path(log.name).read_text(errors="replace"):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return proc, address
            time.sleep(0.3)
        raise TimeoutError(f"the Ray head did not start within {timeout:g}s: {_tail(log.name)}")
    except BaseException:
        _stop(proc)
        raise


def _tail(path: str) -> str:
    return " | ".join(Path(path).read_text(errors="replace").strip().splitlines()[-3:])


@dataclass
class Head:
    """A running head: its address (host:port) and its temp dir (every process of it names the dir)."""

    address: str
    temp_dir: Path


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, timeout: float = 90.0, env: dict[str, str] | None = None) -> Iterator[Head]:
    """A running head for the block; stopped (and its files removed) afterwards, also when the block fails.

    ``env`` overrides :data:`ENV` for the head (token authentication: ``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``).
    """
    # Short: Ray's socket paths under the temp dir must stay within the 107-byte limit of a Unix socket.
    temp_dir = Path(tempfile.mkdtemp(prefix="rayt", dir="/tmp"))
    try:
        try:
            proc, address = _start(num_cpus, temp_dir, timeout, env or {})
        except (RuntimeError, TimeoutError):  # a loaded machine sometimes misses Ray's start-up timeouts once
            proc, address = _start(num_cpus, temp_dir, timeout, env or {})
        try:
            yield Head(address, temp_dir)
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
        temp_dir.with_suffix(".log").unlink(missing_ok=True)


def cluster_pids(temp_dir_marker: str) -> list[int]:
    """Processes whose command line names ``temp_dir_marker`` (to check nothing of a cluster is left)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if temp_dir_marker in cmd:
                found.append(int(p.name))
    return found
