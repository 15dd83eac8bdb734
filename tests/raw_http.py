"""Test support: raw TCP connections to a running server, for request heads no HTTP client
would send (too large, never finished), and what the server answers before it closes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def raw_connection(host: str, port: int) -> Iterator[socket.socket]:
    """A connection with a small send buffer: once the server stops reading, the client is
    blocked after little more than the server read."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        yield sock


def flood_head(sock: socket.socket) -> int:
    """Start a request head and send its last header's value, up to a megabyte, until the
    server closes the connection; how many bytes of the value were sent."""
    sent = 0
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
    with pytest.raises(OSError):  # the server closed: EPIPE or a reset
        while sent < 1024 * 1024:
            sock.sendall(b"a" * 1024)
            sent += 1024
    return sent


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset ends it too)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received
