"""`certgraph serve` as a real process applies its head and WebSocket message limits."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.raw_http import flood_head, raw_connection, until_closed
from tests.support import CERTGRAPH, cli_env, free_port, run_cli, wait_until

pytestmark = pytest.mark.slow

CAP = 8 * 1024
BODY = 4 * 1024
# What socket buffers may hold when the server stops reading (the client's send buffer is
# made small; the receive window was seen up to ~220 KiB on loopback).
IN_FLIGHT = 512 * 1024
# The most one socket read hands the server (uvloop's read buffer).
ONE_READ = 256 * 1024


@dataclass
class Served:
    port: int
    log: Path


@pytest.fixture
def served(sqlite_url: str, tmp_path: Path) -> Iterator[Served]:
    """A `certgraph serve` with small limits: its port and its log."""
    assert run_cli("migrate", database_url=sqlite_url).returncode == 0
    port = free_port()
    log = tmp_path / "serve.log"
    env = cli_env(
        sqlite_url,
        max_header_bytes=str(CAP),
        header_timeout_seconds="1",
        max_body_bytes=str(BODY),
    )
    with log.open("wb") as output:
        process = subprocess.Popen(
            [CERTGRAPH, "serve", "--port", str(port)], env=env, stdout=output, stderr=output
        )
    try:

        def up() -> bool:
            assert process.poll() is None, f"serve exited:\n{log.read_text()}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success
            except httpx.TransportError:
                return False

        wait_until(up, what="`certgraph serve` to answer")
        yield Served(port, log)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_serve_refuses_a_head_past_its_cap(served: Served) -> None:
    with raw_connection("127.0.0.1", served.port) as sock:
        sent = flood_head(sock)
        answer = until_closed(sock)

    assert sent < CAP + IN_FLIGHT
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")

    def logged() -> list[int]:
        return [int(n) for n in re.findall(rb"after reading (\d+) bytes", served.log.read_bytes())]

    wait_until(lambda: bool(logged()), what="the refusal in the log")
    [read] = logged()
    assert CAP < read <= CAP + ONE_READ


def test_serve_closes_a_head_that_never_ends(served: Served) -> None:
    with raw_connection("127.0.0.1", served.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        assert until_closed(sock) == b""  # within the 10 s liveness bound; configured 1 s


def test_serve_closes_a_socket_whose_message_passes_the_body_limit(served: Served) -> None:
    async def exchange() -> int:
        url = f"ws://127.0.0.1:{served.port}/graphql"
        subprotocols = [websockets.Subprotocol("graphql-transport-ws")]
        async with websockets.connect(url, subprotocols=subprotocols, max_size=None) as ws:
            payload = {"Authorization": "Bearer " + "x" * BODY}
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), timeout=10)
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code

    assert asyncio.run(exchange()) == 1009
