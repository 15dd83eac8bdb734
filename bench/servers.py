"""The servers under test, each a process of its own on loopback, and their memory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
# The checkout whose code the servers run (this one), whatever the current directory.
ROOT = Path(__file__).absolute().parent.parent
# The same uvicorn settings as `certgraph serve` (uvloop, httptools, log level info).
UVICORN_FLAGS = ["--loop", "uvloop", "--http", "httptools", "--log-level", "info"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(database_url: str, extra: dict[str, str], root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTGRAPH_")}
    env.update({"CERTGRAPH_DATABASE_URL": database_url, "PYTHONPATH": str(root), **extra})
    return env


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log: Path
    root: Path = ROOT
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up; see {self.log}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer /healthz within {timeout} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def certgraph(name: str, database_url: str, log_dir: Path, root: Path = ROOT) -> Server:
    """`certgraph serve`, as an operator runs it (production settings, one worker), running the
    code of the checkout at `root` (another one compares before and after a change)."""
    port = free_port()
    settings = {
        "CERTGRAPH_AUTH": "token",
        "CERTGRAPH_ENV": "production",
        # Capacity is what is measured: no per-tenant rate limit, and room for the 1,000
        # subscribers (one socket each) of scenario (e) on one tenant (operator settings).
        "CERTGRAPH_RATE_LIMIT_PER_SECOND": "0",
        "CERTGRAPH_MAX_SUBSCRIPTIONS_PER_TENANT": "100000",
        "CERTGRAPH_MAX_WS_CONNECTIONS_PER_TENANT": "100000",
        "CERTGRAPH_MAX_WS_CONNECTIONS": "100000",
    }
    return Server(
        name,
        [str(BIN / "certgraph"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        _environment(database_url, settings, root),
        port,
        log_dir / f"{name}.log",
        root,
    )


def floor(name: str, database_url: str, log_dir: Path, *, reads: str = "runner") -> Server:
    """The floor (`bench.floor`); `reads="aiosqlite"` for the one reading through aiosqlite."""
    port = free_port()
    argv = [str(BIN / "python"), "-m", "uvicorn", "bench.floor:app_from_env", "--factory"]
    return Server(
        name,
        [*argv, "--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS],
        _environment(database_url, {"CERTGRAPH_FLOOR_READS": reads}, ROOT),
        port,
        log_dir / f"{name}.log",
    )


# ---- memory


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class RssMeter:
    """Peak resident memory of a process over a stretch of time (sampled, and the kernel's
    high-water mark, reset at the start when the kernel allows it)."""

    pid: int
    interval: float = 0.05
    peak_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssMeter:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self._hwm = True
        except OSError:
            self._hwm = False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
            except (OSError, ValueError):
                return
            self._stop.wait(self.interval)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        if self._hwm:
            with contextlib.suppress(OSError):
                self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmHWM"))

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024
