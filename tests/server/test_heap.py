"""The serving heap hands freed memory back to the system, on a timer that can be turned off."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server import heap


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_freed_heap_memory_goes_back_to_the_system() -> None:
    # 1.5 KB blocks come from malloc's heap, not Python's small-object arenas. Keeping every
    # tenth (the last one too) leaves whole free pages inside the heap, which malloc keeps.
    blocks = [bytearray(1500) for _ in range(60_000)]
    kept = blocks[9::10]
    del blocks
    before = rss_mib()
    heap.release_free_memory()
    after = rss_mib()
    assert len(kept) == 6_000
    assert before - after > 30, (before, after)


async def test_the_timer_trims_on_a_thread_while_the_loop_goes_on() -> None:
    blocks = [bytearray(1500) for _ in range(60_000)]
    kept = blocks[9::10]
    del blocks
    before = rss_mib()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(tick())
    await asyncio.sleep(0)
    await heap.release_free_memory_off_loop()
    ticking.cancel()
    after = rss_mib()
    assert len(kept) == 6_000
    assert before - after > 30, (before, after)
    # The loop turned while the trim ran: it was not called on the loop's thread.
    assert ticks > 1


async def test_the_heap_is_trimmed_on_its_timer_and_not_when_switched_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trims: list[None] = []

    async def trim() -> None:
        trims.append(None)

    monkeypatch.setattr(heap, "release_free_memory_off_loop", trim)
    async with heap.settled_heap(trim_seconds=0.01):
        await asyncio.sleep(0.2)
    assert trims
    trims.clear()
    async with heap.settled_heap(trim_seconds=0):
        await asyncio.sleep(0.1)
    assert trims == []
