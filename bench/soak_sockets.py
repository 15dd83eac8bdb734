"""The soak's hostile WebSocket and raw-socket traffic (issue 12, items 2, 6 and 7).

Large WebSocket documents, a header that never ends, a header sent halfway and left open, and
a thousand idle authenticated sockets; each bounded in count and time, counted in `Outcomes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from bench.soak_items import Outcomes, Target

# Past uvicorn's own WebSocket message limit (16 MiB).
OVERSIZE = 17 * 1024 * 1024


async def _open(target: Target, patience: float) -> tuple[ClientConnection | None, str]:
    """An authenticated graphql-transport-ws socket, or None and why there is none."""
    try:
        socket = await connect(
            target.ws_url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            compression=None,
            open_timeout=patience,
            max_size=None,
            # Idle means idle: no keepalive pings from the client.
            ping_interval=None,
        )
    except InvalidStatus as refused:
        return None, f"HTTP {refused.response.status_code}"
    except (OSError, TimeoutError, WebSocketException) as error:
        return None, type(error).__name__
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {target.token}"}}
    what = await _exchange(socket, orjson.dumps(init).decode(), patience)
    if what != "connection_ack":
        await socket.close()
        return None, what
    return socket, what


async def _exchange(socket: ClientConnection, message: str, patience: float) -> str:
    """Send one message and name the first answer: its type (and error code), or the close."""
    try:
        await socket.send(message)
        async with asyncio.timeout(patience):
            answer = orjson.loads(await socket.recv())
    except TimeoutError:
        return "timeout"
    except ConnectionClosed as closed:
        return f"close {closed.rcvd.code if closed.rcvd else 'abnormal'}"
    kind = str(answer.get("type"))
    payload = answer.get("payload")
    errors = payload if isinstance(payload, list) else (payload or {}).get("errors")
    if errors:
        return f"{kind} {(errors[0].get('extensions') or {}).get('code', 'error')}"
    return kind


# ---- (2) large WebSocket documents


def large_document(number: int, size: int) -> str:
    """A valid query padded with one long comment: every byte is read by the lexer, and each
    `number` makes a document the parse caches have not seen."""
    head = f"query Soak{number} {{ viewer {{ tenant {{ name }} }} }}\n#"
    return head + "x" * (size - len(head))


async def large_documents(target: Target, out: Outcomes) -> None:
    sizes = target.sizes
    stamp = time.time_ns()
    # The oversize one first: the item may be cut before the last of the others.
    plan = [(stamp + n, sizes.ws_document_bytes) for n in range(sizes.ws_documents)]
    for number, size in [(stamp - 1, OVERSIZE), *plan]:
        message = orjson.dumps(
            {"id": "1", "type": "subscribe", "payload": {"query": large_document(number, size)}}
        ).decode()
        sent = time.monotonic()
        socket, what = await _open(target, sizes.timeout)
        if socket is not None:
            what = await _exchange(socket, message, sizes.timeout)
            await socket.close()
        label = f"{size / 1e6:.0f} MB" if size < OVERSIZE else "17 MiB"
        out.add(f"{label}: {what}", time.monotonic() - sent)


# ---- (6) a header that never ends, and one sent halfway


def _port(target: Target) -> int:
    port = httpx.URL(target.url).port
    assert port is not None
    return port


def _status_line(data: bytes) -> str:
    first = data.split(b"\r\n", 1)[0].decode(errors="replace")
    return first.split(" ", 2)[1] if first.startswith("HTTP/") and " " in first else "bytes"


async def endless_header(target: Target, out: Outcomes) -> None:
    """Stream one header line until `header_mib` MiB are out or the server answers or closes."""
    sizes = target.sizes
    sent_at = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(target))
    answer = asyncio.create_task(reader.read(65536))
    chunk, sent = b"a" * 65536, 0
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Soak: ")
    try:
        async with asyncio.timeout(sizes.timeout):
            # A server that stops reading may still have answered (431) before closing.
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                while sent < sizes.header_mib * 1024 * 1024 and not answer.done():
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
                if not answer.done():
                    writer.write(b"\r\n\r\n")
                    await writer.drain()
            data = await answer
        what = f"HTTP {_status_line(data)}" if data else "closed"
    except TimeoutError:
        what = "timeout"
    except (ConnectionResetError, BrokenPipeError):
        what = "reset"
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    out.add(f"{what} after {sent / 1024 / 1024:.1f} MiB", time.monotonic() - sent_at)


async def half_header(target: Target, out: Outcomes) -> None:
    """Half a header, then silence: how long does the server keep the connection?"""
    hold = target.sizes.half_open_seconds
    sent_at = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(target))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Soak: half")
    try:
        async with asyncio.timeout(hold):
            data = await reader.read(65536)
        what = f"HTTP {_status_line(data)}" if data else "closed"
        out.add(f"{what} after {time.monotonic() - sent_at:.1f} s", time.monotonic() - sent_at)
    except TimeoutError:
        out.add(f"still open after {hold:.0f} s", time.monotonic() - sent_at)
    except (ConnectionResetError, BrokenPipeError):
        out.add(f"reset after {time.monotonic() - sent_at:.1f} s", time.monotonic() - sent_at)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def headers(target: Target, out: Outcomes) -> None:
    await endless_header(target, out)
    await half_header(target, out)


# ---- (7) idle authenticated sockets


async def idle_sockets(target: Target, out: Outcomes) -> None:
    """Open `sockets` authenticated sockets (100 at a time), keep them a second, count how
    many the server still holds open, then close them."""
    sizes = target.sizes
    opened: list[ClientConnection] = []

    async def one() -> None:
        sent = time.monotonic()
        socket, what = await _open(target, sizes.timeout)
        out.add("ack" if socket is not None else what, time.monotonic() - sent)
        if socket is not None:
            opened.append(socket)

    try:
        for start in range(0, sizes.sockets, 100):
            await asyncio.gather(*(one() for _ in range(min(100, sizes.sockets - start))))
        await asyncio.sleep(1)
        still = sum(socket.close_code is None for socket in opened)
        out.notes.append(f"{still} of {sizes.sockets} open after 1 s")
    finally:
        await asyncio.gather(*(socket.close() for socket in opened), return_exceptions=True)
