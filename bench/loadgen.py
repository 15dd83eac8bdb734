"""Load generators: `wrk` (closed loop, LuaJIT scripts) for HTTP, asyncio clients for WebSockets.

Every HTTP scenario runs through one Lua script: it posts a GraphQL body (with an id from a
file filled in, at random or each id once), checks every response (status 200, the expected
marker, no `"errors"`) and prints its statistics as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
from websockets.typing import Subprotocol

from bench import operations

LUA = r"""
local threads = {}
local count = 0
function setup(thread)
  thread:set("tid", count)
  count = count + 1
  table.insert(threads, thread)
end

wrk.method = "POST"
wrk.path = "/graphql"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer __TOKEN__"
local parts = __PARTS__
local ids_file = __IDS_FILE__
local mode = "__MODE__"
local mark = __MARK__
local nthreads = __THREADS__
local ids = {}
if ids_file ~= "" then
  for line in io.lines(ids_file) do ids[#ids + 1] = line end
end
local next_index = 0
bad = 0

function init(args)
  math.randomseed(os.time() + 7919 * (tid or 0))
  next_index = tid or 0
end

function request()
  local id = ""
  if mode == "random" then
    id = ids[math.random(#ids)]
  elseif mode == "once" then
    id = ids[(next_index % #ids) + 1]
    next_index = next_index + nthreads
  end
  return wrk.format(nil, nil, nil, table.concat(parts, id))
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, mark, 1, true)
     or string.find(body, '"errors"', 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, thread in ipairs(threads) do total_bad = total_bad + thread:get("bad") end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "socket_errors": %d, "bad": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    total_bad, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
"""


def _lua_string(value: str) -> str:
    level = "=" * 4
    assert f"]{level}]" not in value
    return f"[{level}[{value}]{level}]"


@dataclass
class HttpLoad:
    """One wrk run: a body (with `ID_SLOT`s filled from `ids`) posted over and over."""

    body: bytes
    token: str
    mark: str = '"data"'
    ids: Sequence[str] = ()
    mode: str = "fixed"  # fixed | random | once

    def script(self, directory: Path, threads: int) -> Path:
        ids_file = ""
        if self.ids:
            path = directory / "ids.txt"
            path.write_text("\n".join(self.ids) + "\n")
            ids_file = str(path)
        parts = "{" + ", ".join(_lua_string(p) for p in operations.split_on_slot(self.body)) + "}"
        lua = (
            LUA.replace("__TOKEN__", self.token)
            .replace("__PARTS__", parts)
            .replace("__IDS_FILE__", _lua_string(ids_file))
            .replace("__MODE__", self.mode)
            .replace("__MARK__", _lua_string(self.mark))
            .replace("__THREADS__", str(threads))
        )
        path = directory / "load.lua"
        path.write_text(lua)
        return path


@dataclass
class HttpResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (make bench does it).")
    return found


def run_wrk(
    url: str, load: HttpLoad, *, seconds: float, connections: int, threads: int
) -> HttpResult:
    with tempfile.TemporaryDirectory(prefix="certgraph-wrk-") as scratch:
        script = load.script(Path(scratch), threads)
        argv = [
            wrk_path(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"{url}/graphql",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            break
    else:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    return HttpResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=data["socket_errors"] + data["bad"],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


# ---- (e) subscriptions: many WebSocket subscribers, one mutation at a time


@dataclass
class FanOutResult:
    subscribers: int
    mutations: int
    # Per mutation: from sending it to the last subscriber's `next` (ms).
    reach_all_ms: list[float] = field(default_factory=list)
    # Per delivery: from sending the mutation to one subscriber's `next` (ms).
    deliveries_ms: list[float] = field(default_factory=list)
    missed: int = 0
    connect_seconds: float = 0.0

    def percentile(self, values: Sequence[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class _Subscriber:
    def __init__(self, arrivals: dict[str, list[float]]) -> None:
        self.arrivals = arrivals
        self.socket: Any = None
        self.errors = 0

    async def open(self, url: str, token: str) -> None:
        self.socket = await websockets.connect(
            url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            max_queue=None,
            open_timeout=60,
        )
        await self.socket.send(
            orjson.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
            ).decode()
        )
        ack = orjson.loads(await self.socket.recv())
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"no connection_ack: {ack}")
        query = " ".join(operations.STATUS_FEED.split())
        await self.socket.send(
            orjson.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}).decode()
        )

    async def listen(self) -> None:
        async for raw in self.socket:
            arrived = time.perf_counter()
            message = orjson.loads(raw)
            if message.get("type") == "ping":
                await self.socket.send('{"type": "pong"}')
                continue
            if message.get("type") != "next" or message["payload"].get("errors"):
                self.errors += 1
                continue
            certificate = message["payload"]["data"]["certificateStatusChanged"]["certificate"]
            self.arrivals.setdefault(certificate["id"], []).append(arrived)


async def fan_out(
    base_url: str,
    token: str,
    certificate_ids: Sequence[str],
    *,
    subscribers: int,
    mutations: int,
    patience: float = 30,
) -> FanOutResult:
    """Connect `subscribers` to the status feed, then withdraw `mutations` + 1 certificates one
    after the other (the first one only proves every subscription is live) and time each
    change's way to every subscriber."""
    ws_url = base_url.replace("http://", "ws://") + "/graphql"
    arrivals: dict[str, list[float]] = {}
    clients = [_Subscriber(arrivals) for _ in range(subscribers)]
    result = FanOutResult(subscribers, mutations)
    started = time.perf_counter()
    for chunk in range(0, subscribers, 100):
        await asyncio.gather(*(c.open(ws_url, token) for c in clients[chunk : chunk + 100]))
    result.connect_seconds = time.perf_counter() - started
    listeners = [asyncio.create_task(c.listen()) for c in clients]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
            for number, global_id in enumerate(certificate_ids[: mutations + 1]):
                body = operations.body(
                    operations.WITHDRAW,
                    "Withdraw",
                    {"id": global_id, "key": f"fanout-{global_id}"},
                )
                sent = time.perf_counter()
                answer = await http.post("/graphql", content=body)
                if operations.WITHDRAW_SUCCESS not in answer.text:
                    raise RuntimeError(f"withdrawal failed: {answer.text}")
                deadline = time.perf_counter() + patience
                while len(arrivals.get(global_id, ())) < subscribers:
                    if time.perf_counter() > deadline:
                        break
                    await asyncio.sleep(0.001)
                got = arrivals.get(global_id, [])
                if number == 0:
                    if len(got) < subscribers:
                        raise RuntimeError(f"only {len(got)} of {subscribers} subscribed")
                    continue
                result.missed += subscribers - len(got)
                if got:
                    result.reach_all_ms.append((max(got) - sent) * 1000)
                    result.deliveries_ms.extend((t - sent) * 1000 for t in got)
                await asyncio.sleep(0.05)
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        await asyncio.gather(
            *(c.socket.close() for c in clients if c.socket), return_exceptions=True
        )
    result.missed += sum(c.errors for c in clients)
    return result


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
