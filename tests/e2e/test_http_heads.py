"""Request heads through a real server started as `certgraph serve` starts uvicorn: one too
large is refused once the server has read about its limit, one that never ends is closed."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from tests.e2e.conftest import Server, ServerFactory
from tests.raw_http import flood_head, raw_connection, until_closed

CAP = 16 * 1024
# The most one socket read hands the server (uvloop's read buffer): the read that crosses the
# cap is counted, never parsed.
ONE_READ = 256 * 1024


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def uvicorn_log() -> Iterator[list[logging.LogRecord]]:
    """What uvicorn's error log receives meanwhile."""
    handler = Records()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def connection(server: Server) -> AbstractContextManager[socket.socket]:
    host, port = server.base_url.removeprefix("http://").split(":")
    return raw_connection(host, int(port))


def request(path: str, header_bytes: int = 0) -> bytes:
    filler = b"X-Filler: " + b"a" * header_bytes + b"\r\n" if header_bytes else b""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + filler + b"\r\n"


def test_a_head_past_the_cap_is_refused_without_reading_the_rest(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_header_bytes=CAP, serving={"log_level": "info"})
    with uvicorn_log() as records, connection(server) as sock:
        sent = flood_head(sock)
        answer = until_closed(sock)

    # The refusal itself may be lost to the reset the rest of the unread head causes.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    # The server stopped reading: what the client got to send is what it read plus what the
    # socket buffers held when it closed, far from the whole megabyte.
    assert sent < 512 * 1024
    [refusal] = [r for r in records if r.getMessage().startswith("refused a request head")]
    assert refusal.args is not None
    limit, _, read = refusal.args  # type: ignore[misc]
    assert limit == CAP
    assert CAP < read <= CAP + ONE_READ


def test_heads_under_the_cap_are_served_one_request_after_another(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_header_bytes=CAP)
    with connection(server) as sock:
        # Each head is counted on its own: together they are over the cap.
        sock.sendall(request("/healthz", CAP - 1024) + request("/healthz", CAP - 1024))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = until_closed(sock)

    assert answer.count(b"HTTP/1.1 200 OK") == 3


def test_a_head_that_never_ends_is_closed(start_server: ServerFactory) -> None:
    server = start_server(header_timeout_seconds=1)
    with connection(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        # A liveness bound, not a measurement: the server closes after ~1 s.
        assert until_closed(sock) == b""


def test_a_connection_that_sends_nothing_is_closed(start_server: ServerFactory) -> None:
    server = start_server(header_timeout_seconds=1)
    with connection(server) as sock:
        assert until_closed(sock) == b""


async def test_a_head_that_ends_in_time_is_served_however_slowly_its_body_comes(
    start_server: ServerFactory,
) -> None:
    # The timeout is the head's: a body (and the request's handling) is not on that clock.
    server = start_server(header_timeout_seconds=1)
    token, _ = await server.token("acme")
    body = b'{"query": "{ __typename }"}'
    with connection(server) as sock:
        sock.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        sock.settimeout(2)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # still open past the head's timeout, waiting for the body
        sock.sendall(body)
        sock.settimeout(10)
        answer = until_closed(sock)

    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b'{"data":{"__typename":"Query"}}')
