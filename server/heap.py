"""Server layer: the garbage collector, tuned for serving once start-up is over.

Start-up leaves ~130,000 long-lived objects (modules, the schema, pools) that every full
collection walked again; frozen, they are skipped. Young collections then run every 5,000 net
allocations instead of 700, and full ones a tenth as often: with 1,000 WebSockets open, each
full collection walked their objects too, and delayed status changes by up to a second. A
request's data is freed by reference counting (see `Context.release`), so what waits for the
collector is small: ~10 MiB more under load (bench/README.md has the numbers).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Python's defaults are (700, 10, 10).
THRESHOLD = (5_000, 10, 100)


@contextmanager
def settled_heap() -> Iterator[None]:
    """While serving: start-up's objects frozen out of collections, collections less often."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        # Back under the collector's care (tests start many apps in one process).
        gc.unfreeze()
