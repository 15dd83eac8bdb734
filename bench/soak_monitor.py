"""The soak's monitors: /healthz and a graphql-transport-ws ping, timed from a process of their own.

The harness builds 16 MB documents and opens a thousand sockets; timed from its own event loop,
that work would read as the server's stalls. The monitor process keeps one keep-alive HTTP
connection asking /healthz and one authenticated graphql-transport-ws connection sending `ping`,
each about every 20 ms, and writes every sample (when it was sent, how long the answer took) to
a JSON-lines file. `time.monotonic()` is the system-wide monotonic clock on Linux, so the
harness compares samples with the start and end of each hostile item directly.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect
from websockets.typing import Subprotocol

INTERVAL = 0.02
# A stalled server still answers a sample late; one that never answers counts as this long.
PATIENCE = 60.0
HEALTHZ, PONG = "healthz", "pong"


@dataclass(frozen=True)
class Sample:
    kind: str
    sent: float
    latency: float
    ok: bool


class _Recorder:
    def __init__(self, path: Path) -> None:
        self.file = path.open("a")
        self.lock = threading.Lock()

    def add(self, kind: str, sent: float, ok: bool) -> None:
        line = json.dumps(
            {"kind": kind, "sent": sent, "latency": time.monotonic() - sent, "ok": ok}
        )
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()


def _healthz(base_url: str, stop: Event, record: _Recorder) -> None:
    with httpx.Client(base_url=base_url, timeout=PATIENCE) as client:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                ok = client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            record.add(HEALTHZ, sent, ok)
            stop.wait(INTERVAL)


def _pings(ws_url: str, token: str, stop: Event, record: _Recorder) -> None:
    """Ping over one socket; a socket the server closes is opened again (and noted)."""
    init = json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    while not stop.is_set():
        sent = time.monotonic()
        try:
            with connect(
                ws_url,
                subprotocols=[Subprotocol("graphql-transport-ws")],
                compression=None,
                open_timeout=PATIENCE,
                # No keepalive of the client's own: it would close the socket on a stalled
                # server, and the stall is what the pings measure.
                ping_interval=None,
            ) as socket:
                socket.send(init)
                if json.loads(socket.recv(timeout=PATIENCE)).get("type") != "connection_ack":
                    raise ConnectionError("no connection_ack")
                while not stop.is_set():
                    sent = time.monotonic()
                    socket.send('{"type": "ping"}')
                    while (kind := json.loads(socket.recv(timeout=PATIENCE)).get("type")) != "pong":
                        if kind == "ping":
                            socket.send('{"type": "pong"}')
                    record.add(PONG, sent, True)
                    stop.wait(INTERVAL)
        except (OSError, TimeoutError, ConnectionError, WebSocketException, ValueError):
            record.add(PONG, sent, False)
            stop.wait(0.5)


def _run(base_url: str, token: str, out: str, stop: Event) -> None:
    record = _Recorder(Path(out))
    ws_url = base_url.replace("http://", "ws://") + "/graphql"
    threads = [
        threading.Thread(target=_healthz, args=(base_url, stop, record)),
        threading.Thread(target=_pings, args=(ws_url, token, stop, record)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def load(path: Path) -> list[Sample]:
    if not path.exists():
        return []
    return [Sample(**json.loads(line)) for line in path.read_text().splitlines() if line]


def worst(samples: list[Sample], kind: str, start: float, end: float) -> float | None:
    """The longest wait for an answer among the samples in flight during [start, end] (s);
    None when there were none."""
    found = [
        s.latency
        for s in samples
        if s.kind == kind and s.sent <= end and s.sent + s.latency >= start
    ]
    return max(found) if found else None


def failures(samples: list[Sample], kind: str) -> int:
    return sum(not s.ok for s in samples if s.kind == kind)


@contextmanager
def monitoring(base_url: str, token: str, out: Path) -> Iterator[Any]:
    """Run the monitors in a fresh interpreter (spawned, so the harness's threads and sockets
    stay behind) until the block ends; the samples are in `out`."""
    out.unlink(missing_ok=True)
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    process = context.Process(target=_run, args=(base_url, token, str(out), stop), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + PATIENCE
        while {s.kind for s in load(out)} != {HEALTHZ, PONG}:
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the soak monitors did not start")
            time.sleep(0.05)
        yield process
    finally:
        stop.set()
        process.join(PATIENCE + 5)
        if process.is_alive():
            process.kill()
            process.join()
