"""Server layer: how uvicorn serves the app, for `certgraph serve` and the tests alike.

uvicorn's httptools protocol reads a request head of any size for as long as the client takes,
and waits forever for a head that never ends: `HeadGuard` answers 431 past
`MAX_HEADER_BYTES` (counting bytes as they arrive, before parsing them) and closes a connection
whose head is not complete `HEADER_TIMEOUT_SECONDS` after it opened or after the previous
response. WebSocket messages get the HTTP body's bound (`MAX_BODY_BYTES`): uvicorn closes the
socket with 1009 past it.

`python -m server --host H --port P --workers N` runs `main` (what `certgraph serve` execs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from asyncio import TimerHandle
from typing import Any, Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from server.settings import Settings

APP_FACTORY: Final = "server.http.app:app_from_env"
END_OF_HEAD: Final = b"\r\n\r\n"
TOO_LARGE: Final = b"Request header fields too large."
# uvicorn's exit status when the server could not start.
STARTUP_FAILURE: Final = 3


class ServingConfig(uvicorn.Config):
    """uvicorn's configuration plus the head's time limit (its size limit is uvicorn's
    `h11_max_incomplete_event_size`, the same bound under h11)."""

    def __init__(self, app: Any, *, header_timeout_seconds: float, **options: Any) -> None:
        super().__init__(app, **options)
        self.header_timeout_seconds = header_timeout_seconds


def serving_config(settings: Settings, app: Any, **options: Any) -> ServingConfig:
    """The uvicorn configuration certgraph serves with; `options` add to or override it."""
    values: dict[str, Any] = {
        "loop": "uvloop",
        "http": HeadGuard,
        "proxy_headers": False,
        # Status changes are a few hundred bytes: compressing them cost more CPU than it saved
        # bytes, and ~50 KiB of zlib state per socket (bench/README.md, scenario e).
        "ws_per_message_deflate": False,
        "ws_max_size": settings.max_body_bytes,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "header_timeout_seconds": settings.header_timeout_seconds,
        "log_level": "info",
        **options,
    }
    return ServingConfig(app, **values)


class HeadGuard(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on each request head's size and read time."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes = config.h11_max_incomplete_event_size or 64 * 1024
        self.head_timeout = (
            config.header_timeout_seconds if isinstance(config, ServingConfig) else 10.0
        )
        self.reading_head = True
        self.head_bytes = 0
        # The head's last bytes so far: its end may straddle two reads.
        self.head_tail = b""
        self.head_timer: TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self.reading_head:
            if not self._head_fits(data):
                self._refuse_head()
                return
            self._arm_head_timer()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self.reading_head = False
        self.head_bytes = 0
        self.head_tail = b""
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # What follows on this connection is the next request's head.
        self.reading_head = True
        super().on_message_complete()

    def _head_fits(self, data: bytes) -> bool:
        room = self.max_head_bytes - self.head_bytes
        self.head_bytes += len(data)
        if len(data) > room and END_OF_HEAD not in self.head_tail + data[:room]:
            return False
        self.head_tail = (self.head_tail + data[-3:])[-3:]
        return True

    def _refuse_head(self) -> None:
        # Where uvicorn reports the requests it refuses. The bytes read include the last read,
        # which the parser never saw.
        self.logger.info(
            "refused a request head of more than %d bytes from %s after reading %d bytes",
            self.max_head_bytes,
            self.client[0] if self.client else "unknown",
            self.head_bytes,
        )
        self.reading_head = False
        self._disarm_head_timer()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(TOO_LARGE)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + TOO_LARGE
        )
        self.transport.close()

    def _arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.reading_head and not self.transport.is_closing():
            self.transport.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    arguments = parser.parse_args(argv)
    config = serving_config(
        Settings(),
        APP_FACTORY,
        factory=True,
        host=arguments.host,
        port=arguments.port,
        workers=arguments.workers,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down; SIGINT is a normal end.
    with contextlib.suppress(KeyboardInterrupt):
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
            return
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
