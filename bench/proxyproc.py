"""The proxy under test: ``python -m proxy serve --config <generated toml>`` in a subprocess.

Only the public interface is used (the config file and HTTP), so the benchmark
measures what an operator runs. Each proxy gets a fresh temporary directory (its
SQLite database, config and log); given a ``db_url``, several proxies share that
PostgreSQL database instead, each with its own ``GMP_INSTANCE_ID``. ``Usage``
reads the process's CPU seconds and peak RSS (``VmHWM`` on Linux, else the highest
RSS sampled).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

ADMIN_TOKEN = "bench-admin-token"  # noqa: S105 (a loopback-only benchmark token)
ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("proxy", "actors")
REVISION_FILE = "REVISION"  # the git revision a snapshot was taken from, written by run.py
_code_root = ROOT
HEALTH_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
MB = 1024 * 1024


class DeadlineError(RuntimeError):
    """A bounded wait ran out; the message says what was awaited and what was seen."""


@dataclass(frozen=True)
class Tenant:
    id: str
    client_base_url: str | None = None


@dataclass(frozen=True)
class Account:
    tenant_id: str
    id: str
    port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(
    db_path: Path | str,
    port: int,
    tenants: list[Tenant],
    accounts: list[Account],
    *,
    api_only: bool = False,
) -> str:
    """The TOML file; ``db_path`` is a SQLite file or a ``postgresql://`` URL; ``api_only``
    sets ``start_active = false`` (no sending, no syncing)."""
    lines = [
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
        f'db_path = "{db_path}"',
        'log_level = "WARNING"',
        "shutdown_timeout = 5",
        f"start_active = {'false' if api_only else 'true'}",
        "",
        "[delivery]",
        "send_loop_interval = 0.05",
        "",
        "[security]",
        f'api_token = "{ADMIN_TOKEN}"',
    ]
    for tenant in tenants:
        lines += ["", "[[tenants]]", f'id = "{tenant.id}"', f'name = "Bench {tenant.id}"']
        if tenant.client_base_url:
            lines.append(f'client_base_url = "{tenant.client_base_url}"')
    for account in accounts:
        lines += ["", "[[accounts]]", f'tenant_id = "{account.tenant_id}"', f'id = "{account.id}"']
        lines += ['host = "127.0.0.1"', f"port = {account.port}", "use_tls = false"]
    return "\n".join(lines) + "\n"


def snapshot_code(dest: Path, attempts: int = 12, wait_s: float = 10.0) -> str:
    """Copy ``proxy/`` and ``actors/`` as they are now; return a short digest of the copy.

    Others edit the working tree while a run lasts minutes: every proxy of the run
    starts from this copy, so all figures describe one state of the code. A tree
    caught mid-edit (it does not import) is copied again, ``attempts`` times at most.
    """
    for attempt in range(1, attempts + 1):
        for name in CODE_DIRS:
            shutil.rmtree(dest / name, ignore_errors=True)
            shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        check = subprocess.run(
            [sys.executable, "-c", "import proxy.server, proxy.cli"],
            cwd=str(dest),
            env=os.environ | {"PYTHONPATH": str(dest)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check.returncode == 0:
            return code_digest(dest)
        problem = (check.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  ! code snapshot {attempt}/{attempts} does not import: {problem}")
        if attempt < attempts:
            time.sleep(wait_s)  # someone is mid-edit; their next save usually fixes it
    raise RuntimeError("the working tree did not import; nothing to measure")


def code_digest(root: Path) -> str:
    """A short digest of the snapshot's files (names and contents), to tell runs apart."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.name != REVISION_FILE:
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def use_code(root: Path) -> None:
    """Run every later proxy from ``root`` (a snapshot) instead of the working tree."""
    global _code_root  # noqa: PLW0603 (set once, before any proxy starts)
    _code_root = root


class Usage:
    """CPU seconds and peak RSS of one process, sampled by a daemon thread."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self._process = psutil.Process(pid)
        self._interval_s = interval_s
        self._peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="usage", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            with contextlib.suppress(psutil.Error):
                self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)

    def cpu_s(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def rss_mb(self) -> float:
        return self._process.memory_info().rss / MB

    def threads(self) -> int:
        return self._process.num_threads()

    def peak_rss_mb(self) -> float:
        """Peak since the process started: the kernel's high-water mark where there is one."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self._process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MB
        with contextlib.suppress(psutil.Error):
            self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)
        return self._peak_rss / MB

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)


class Proxy:
    """A running proxy subprocess with an admin session; use as a context manager."""

    def __init__(
        self,
        tenants: list[Tenant],
        accounts: list[Account],
        label: str,
        *,
        api_only: bool = False,
        db_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``db_url`` shares that database (no SQLite file of its own); ``env`` is added
        to the proxy's environment (``GMP_INSTANCE_ID`` for one of several instances)."""
        self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{label}-")
        self.workdir = Path(self._tmp.name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "proxy.log"
        config = self.workdir / "mail-proxy.toml"
        db_path = db_url or self.workdir / "proxy.db"
        config.write_text(config_text(db_path, self.port, tenants, accounts, api_only=api_only))
        self.session = requests.Session()
        self.session.headers["X-API-Token"] = ADMIN_TOKEN
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [sys.executable, "-m", "proxy", "serve", "--config", str(config)],
                cwd=str(self.workdir),
                env=os.environ | (env or {}) | {"PYTHONPATH": str(_code_root)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
            )
        self.usage = Usage(self.process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_healthy(self, timeout_s: float = HEALTH_TIMEOUT_S) -> float:
        """Wait for ``/health`` to answer ok; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/health", timeout=2).ok:
                    return time.monotonic() - started
            time.sleep(0.05)
        raise DeadlineError(f"proxy did not answer /health within {timeout_s:.0f}s")

    def add_messages(self, messages: list[dict[str, Any]]) -> requests.Response:
        response = self.session.post(
            self.url + "/commands/add-messages", json={"messages": messages}, timeout=30
        )
        if response.status_code != 200 or response.json().get("queued") != len(messages):
            raise RuntimeError(f"add-messages: {response.status_code} {response.text[:500]}")
        return response

    def log(self, tail_chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail_chars:]

    def stop(self) -> None:
        """SIGTERM and wait; kill if it outlives ``STOP_TIMEOUT_S``. Idempotent."""
        self.usage.close()
        self.session.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(f"  ! proxy {self.pid} did not stop in {STOP_TIMEOUT_S:.0f}s; killed")
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        self._tmp.cleanup()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
