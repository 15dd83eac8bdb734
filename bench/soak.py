"""`make soak`: the hostile set of issue 12 against a live certgraph, and what it costs everyone.

    .venv/bin/python -m bench.soak [--quick] [--certs 200000] [--item-seconds 35]

Seeds a SQLite database with one large tenant, starts `certgraph serve` (production settings,
tokens, no rate limit so the hostile requests are processed), runs the monitors (/healthz and a
graphql-transport-ws ping, `bench.soak_monitor`) for the whole run, and sends the hostile items
one after another, then all at once from 4 clients. Prints one row per item (what the server
answered, the worst /healthz and pong waits meanwhile, RSS, log lines) and the targets: worst
stall <= 100 ms, RSS back within 20 MiB of its start. It is a report: the exit code is 0 whatever
the figures, and 1 only when the harness could not run an item.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx

from bench import operations, seeding, servers, soak_items, soak_monitor, soak_sockets
from bench.report import columns
from bench.servers import RssMeter, Server
from bench.soak_items import Outcomes, Sizes, Target

ROOT = Path(__file__).absolute().parent.parent
Item = Callable[[Target, Outcomes], Awaitable[None]]
ITEMS: list[tuple[str, Item]] = [
    ("1 fragment fan-out", soak_items.fan_out),
    ("2 large WS documents", soak_sockets.large_documents),
    ("3 many additionalDomains", soak_items.many_domains),
    ("4 scanning searches", soak_items.searches),
    ("5 writes behind a lock", soak_items.queued_writes),
    ("6 endless/half header", soak_sockets.headers),
    ("7 idle WebSockets", soak_sockets.idle_sockets),
    ("8 error burst", soak_items.mistakes),
]
TOGETHER = "all 8 at once, 4 clients"
STALL_TARGET_MS = 100
RSS_TARGET_MIB = 20
# Withdrawable certificates: item 5 withdraws three in each phase.
WITHDRAW_POOL = 50


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 2,000 certificates")
    parser.add_argument("--certs", type=int, help="certificates in the tenant (default 200,000)")
    parser.add_argument("--timeout", type=float, help="client timeout per request, s")
    parser.add_argument("--item-seconds", type=float, help="bound on each item (default 35)")
    parser.add_argument(
        "--together-seconds", type=float, help="bound on the concurrent phase (default 60)"
    )
    parser.add_argument(
        "--settle", type=float, default=120, help="longest wait for /healthz after an item"
    )
    parser.add_argument(
        "--rest",
        type=float,
        default=35,
        help="idle time before the end RSS is read (the server trims its heap every 30 s)",
    )
    parser.add_argument("--reseed", action="store_true", help="seed again, ignoring the cache")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    sizes = soak_items.QUICK if args.quick else Sizes()
    args.sizes = replace(sizes, timeout=args.timeout) if args.timeout else sizes
    args.certs = args.certs or (2_000 if args.quick else 200_000)
    args.item_seconds = args.item_seconds or (20 if args.quick else 35)
    args.together_seconds = args.together_seconds or (30 if args.quick else 60)
    return args


@dataclass
class Row:
    item: str
    answers: str
    slowest_s: float
    start: float
    end: float
    rss_before_mib: float
    rss_after_mib: float
    rss_peak_mib: float
    log_lines: int
    healthz_ms: float | None = None
    pong_ms: float | None = None
    failed: bool = False


def rss_mib(pid: int) -> float:
    """The resident memory of a running process; 0 once it has exited."""
    try:
        return servers.status_kib(pid, "VmRSS") / 1024
    except OSError:
        return 0.0


def log_lines(path: Path, since: int) -> int:
    """Lines the server logged past byte `since`, leaving out the access lines of the
    monitors' /healthz (50 a second, whatever the item)."""
    with path.open("rb") as log:
        log.seek(since)
        return sum(b'"GET /healthz ' not in line for line in log)


class Soak:
    def __init__(self, server: Server, target: Target, args: argparse.Namespace) -> None:
        self.server, self.target, self.args = server, target, args

    async def settle(self) -> bool:
        """Wait (bounded) until /healthz answers within a second: work a client gave up on
        may still hold the server, and it belongs to the item that sent it."""
        deadline = time.monotonic() + self.args.settle
        async with httpx.AsyncClient(base_url=self.server.url, timeout=1) as client:
            while time.monotonic() < deadline and self.exit_code() is None:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/healthz")).status_code == 200:
                        return True
                await asyncio.sleep(0.2)
        return False

    def exit_code(self) -> int | None:
        assert self.server.process is not None
        return self.server.process.poll()

    async def measure(
        self, label: str, run: Callable[[Outcomes], Awaitable[None]], seconds: float
    ) -> Row:
        """Run one item (cut after `seconds`), then wait for the server to answer again."""
        pid, out = self.server.pid, Outcomes()
        before, offset = rss_mib(pid), self.server.log.stat().st_size
        failed = False
        start = time.monotonic()
        print(f"{label} ...", flush=True)
        bound = asyncio.timeout(seconds)
        with RssMeter(pid) as meter:
            try:
                async with bound:
                    await run(out)
            except Exception as error:
                if isinstance(error, TimeoutError) and bound.expired():
                    out.notes.append(f"cut at {seconds:.0f} s")
                else:
                    out.notes.append(f"HARNESS FAILED: {error!r}")
                    failed = True
        end = time.monotonic()
        if not await self.settle():
            code = self.exit_code()
            out.notes.append(
                f"/healthz still failing {self.args.settle:.0f} s after the item"
                if code is None
                else f"THE SERVER EXITED ({code})"
            )
        after = rss_mib(pid)
        peak = max(meter.peak_mib, before, after)
        lines = log_lines(self.server.log, offset)
        return Row(
            label, out.summary(), out.slowest, start, end, before, after, peak, lines, failed=failed
        )

    async def together(self, out: Outcomes) -> None:
        """Every item, 4 at a time; what was answered counts even if the phase is cut."""
        queue: asyncio.Queue[tuple[str, Item]] = asyncio.Queue()
        for item in ITEMS:
            queue.put_nowait(item)
        done: list[str] = []

        async def client() -> None:
            while not queue.empty():
                label, run = queue.get_nowait()
                mine = Outcomes()
                try:
                    await run(self.target, mine)
                    done.append(label.split()[0])
                finally:
                    out.merge(mine)

        try:
            await asyncio.gather(*(client() for _ in range(4)))
        finally:
            out.notes.append(f"items finished: {', '.join(sorted(done)) or 'none'}")

    async def run(self) -> list[Row]:
        rows = []
        for label, run in ITEMS:
            item = functools.partial(run, self.target)
            rows.append(await self.measure(label, item, self.args.item_seconds))
        rows.append(await self.measure(TOGETHER, self.together, self.args.together_seconds))
        return rows


async def warm_up(target: Target) -> None:
    """Ordinary traffic first, so the start RSS is a serving process's, not a fresh one's."""
    async with target.client() as client:
        for _ in range(20):
            body = operations.body(operations.CONSOLE_LIST, "ConsoleList", {"first": 50})
            answer = await client.post("/graphql", content=body)
            if answer.status_code != 200 or "errors" in answer.json():
                raise RuntimeError(f"warm-up failed: {answer.text[:500]}")


@dataclass
class Totals:
    rss_start_mib: float
    rss_peak_mib: float
    rss_end_mib: float
    worst_healthz_ms: float
    worst_pong_ms: float
    healthz_failures: int
    pong_failures: int
    log_lines: int

    @property
    def stall_met(self) -> bool:
        return max(self.worst_healthz_ms, self.worst_pong_ms) <= STALL_TARGET_MS

    @property
    def rss_met(self) -> bool:
        return self.rss_end_mib - self.rss_start_mib <= RSS_TARGET_MIB


async def soak(
    server: Server, target: Target, args: argparse.Namespace
) -> tuple[list[Row], Totals]:
    samples_path = server.log.with_name("soak-samples.jsonl")
    with soak_monitor.monitoring(server.url, target.token, samples_path):
        await warm_up(target)
        await asyncio.sleep(1)
        start = rss_mib(server.pid)
        rows = await Soak(server, target, args).run()
        # "Back after the set": once the server has idled past its heap trim (server.heap).
        await asyncio.sleep(args.rest)
        end = rss_mib(server.pid)
    samples = soak_monitor.load(samples_path)
    for row in rows:
        for kind, name in ((soak_monitor.HEALTHZ, "healthz_ms"), (soak_monitor.PONG, "pong_ms")):
            worst = soak_monitor.worst(samples, kind, row.start, row.end)
            setattr(row, name, None if worst is None else worst * 1000)
    totals = Totals(
        rss_start_mib=start,
        rss_peak_mib=max(r.rss_peak_mib for r in rows),
        rss_end_mib=end,
        worst_healthz_ms=max(r.healthz_ms or 0 for r in rows),
        worst_pong_ms=max(r.pong_ms or 0 for r in rows),
        healthz_failures=soak_monitor.failures(samples, soak_monitor.HEALTHZ),
        pong_failures=soak_monitor.failures(samples, soak_monitor.PONG),
        log_lines=sum(r.log_lines for r in rows),
    )
    return rows, totals


def _ms(value: float | None) -> str:
    return "none" if value is None else f"{value:,.0f}"


def table(rows: list[Row], totals: Totals) -> str:
    lines = [
        (
            "item",
            "healthz ms",
            "pong ms",
            "slowest s",
            "RSS MiB before>after (peak)",
            "log",
            "answers",
        )
    ]
    for r in rows:
        rss = f"{r.rss_before_mib:.0f}>{r.rss_after_mib:.0f} ({r.rss_peak_mib:.0f})"
        lines.append(
            (
                r.item,
                _ms(r.healthz_ms),
                _ms(r.pong_ms),
                f"{r.slowest_s:.1f}",
                rss,
                str(r.log_lines),
                r.answers,
            )
        )
    out = columns(lines, right={1, 2, 3, 4, 5})
    stall = max(totals.worst_healthz_ms, totals.worst_pong_ms)
    grown = totals.rss_end_mib - totals.rss_start_mib
    out += [
        "",
        f"worst loop stall (healthz {_ms(totals.worst_healthz_ms)} ms, "
        f"pong {_ms(totals.worst_pong_ms)} ms)  target <= {STALL_TARGET_MS} ms  "
        f"measured {stall:,.0f} ms  {_verdict(totals.stall_met)}",
        f"RSS end - start ({totals.rss_start_mib:.0f} -> {totals.rss_end_mib:.0f} MiB, peak "
        f"{totals.rss_peak_mib:.0f})  target <= {RSS_TARGET_MIB} MiB  measured {grown:+.0f} MiB  "
        f"{_verdict(totals.rss_met)}",
        f"monitor failures: healthz {totals.healthz_failures}, ws ping {totals.pong_failures}; "
        f"server log lines during the set: {totals.log_lines}",
    ]
    return "\n".join(out)


def _verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    # A thousand WebSockets on each side of loopback (the server inherits the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    began = time.monotonic()
    plan = seeding.Plan(certs=args.certs, tenants=1, deep_certs=0, withdraw_pool=WITHDRAW_POOL)
    run_dir = args.results / "run" / f"soak-{os.getpid()}"
    url, manifest = seeding.sqlite_database(plan, args.results / "soak-data", run_dir, args.reseed)
    try:
        server = servers.certgraph("certgraph-soak", url, run_dir)
        # Production defaults but for the rate limit; the log is counted as it is written.
        # The bench raises the WebSocket caps for its 1,000 subscribers; the soak keeps the
        # production defaults, which item 7 is about.
        for cap in (
            "CERTGRAPH_MAX_SUBSCRIPTIONS_PER_TENANT",
            "CERTGRAPH_MAX_WS_CONNECTIONS_PER_TENANT",
            "CERTGRAPH_MAX_WS_CONNECTIONS",
        ):
            server.env.pop(cap, None)
        server.env["PYTHONUNBUFFERED"] = "1"
        target = Target(
            url=server.url,
            token=manifest.tokens[seeding.MAIN.format(1)],
            withdraw_token=manifest.tokens[seeding.WITHDRAW],
            withdrawable=list(manifest.withdrawable),
            database=Path(url.split("///", 1)[1]),
            sizes=args.sizes,
        )
        print(f"starting certgraph on {server.url} ({args.certs:,} certificates)", flush=True)
        server.start()
        try:
            rows, totals = asyncio.run(soak(server, target, args))
        finally:
            server.stop()
    finally:
        seeding.discard_copy(run_dir)
    print()
    print(table(rows, totals))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    saved = save(args, rows, totals, stamp)
    print(f"\n{saved} ({time.monotonic() - began:.0f} s)")
    return 1 if any(r.failed for r in rows) else 0


def save(args: argparse.Namespace, rows: list[Row], totals: Totals, stamp: str) -> Path:
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    settings = {
        "certs": args.certs,
        "quick": args.quick,
        "sizes": {**asdict(args.sizes), "fan_out": str(args.sizes.fan_out)},
    }
    data = {
        "settings": settings,
        "rows": [asdict(r) for r in rows],
        "totals": {**asdict(totals), "stall_met": totals.stall_met, "rss_met": totals.rss_met},
    }
    path = results / f"soak-{stamp}.json"
    text = json.dumps(data, indent=2)
    path.write_text(text)
    (results / "soak-latest.json").write_text(text)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
