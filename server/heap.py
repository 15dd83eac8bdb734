"""Server layer: the garbage collector, tuned for serving once start-up is over.

Start-up leaves ~130,000 long-lived objects (modules, the schema, pools) that every full
collection walked again; frozen, they are skipped. Young collections then run every 5,000 net
allocations instead of 700, and full ones a tenth as often: with 1,000 WebSockets open, each
full collection walked their objects too, and delayed status changes by up to a second. A
request's data is freed by reference counting (see `Context.release`), so what waits for the
collector is small: ~10 MiB more under load (bench/README.md has the numbers).

What a burst leaves behind (a thousand sockets opened and closed, large bodies) is freed, but
in cycles the rarer full collections reach late, and into malloc's heap, which keeps freed
memory unless asked: every `trim_seconds` a full collection runs and glibc's `malloc_trim`
hands free pages back (`make soak` measured 36 MiB kept after the hostile set without it).

The trim walks the whole heap (15-80 ms for ~100 MiB on a busy machine), so it runs on a
thread: ctypes lets go of the GIL for the call, and the event loop goes on meanwhile. Finding
the C library runs `ldconfig` in a subprocess, so that is done once, at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import AsyncIterator, Callable

# Python's defaults are (700, 10, 10).
THRESHOLD = (5_000, 10, 100)

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's `malloc_trim(0)`, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """A full collection, then free heap pages back to the operating system."""
    gc.collect()
    if _TRIM is not None:
        _TRIM()


async def release_free_memory_off_loop() -> None:
    """`release_free_memory` with the trim on a thread: the collection needs the GIL (a thread
    would only take turns with the loop), the trim does not."""
    gc.collect()
    if _TRIM is not None:
        await asyncio.to_thread(_TRIM)


async def _trim_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await release_free_memory_off_loop()


@contextlib.asynccontextmanager
async def settled_heap(trim_seconds: float = 0) -> AsyncIterator[None]:
    """While serving: start-up's objects frozen out of collections, collections less often,
    and (`trim_seconds` > 0) free memory handed back that often."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLD)
    trimming = asyncio.create_task(_trim_every(trim_seconds)) if trim_seconds > 0 else None
    try:
        yield
    finally:
        if trimming is not None:
            trimming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await trimming
        gc.set_threshold(*previous)
        # Back under the collector's care (tests start many apps in one process).
        gc.unfreeze()
