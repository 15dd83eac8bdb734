"""`make bench`: seed, start certgraph and the floor on loopback, drive them, print the table.

    .venv/bin/python -m bench.run [--certs 10000] [--duration 5] [--rounds 3] [--scenarios abcdef]

Scenarios (see bench/README.md): (a) the console list, (b) status polling, (c) withdrawals,
(d) page 1 against page 1,000, (e) 1,000 WebSocket subscribers, (f) (a) on PostgreSQL. The
floor and certgraph are measured in alternating order, round after round, in the same run;
the table shows medians over the rounds and the highest peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench import loadgen, operations, seeding, servers
from bench.loadgen import HttpLoad, HttpResult
from bench.report import Report, Row
from bench.servers import RssMeter, Server

# Not resolved: a checkout whose bench/ is a link runs its own code.
ROOT = Path(__file__).absolute().parent.parent
PG_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--certs", type=int, default=10_000, help="over the main tenants")
    data.add_argument("--tenants", type=int, default=4, help="main tenants")
    data.add_argument("--deep-certs", type=int, default=100_000, help="the deep-paging tenant")
    data.add_argument("--withdraw-pool", type=int, default=20_000, help="withdrawable certs")
    data.add_argument("--reseed", action="store_true", help="seed again, ignoring the cache")
    load = parser.add_argument_group("load")
    load.add_argument("--scenarios", default="abcdef", help="which of a-f to run")
    load.add_argument("--duration", type=float, default=5, help="seconds per measured run")
    load.add_argument("--warmup", type=float, default=1, help="seconds of warm-up per run")
    load.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    load.add_argument("--connections", type=int, default=32)
    load.add_argument("--threads", type=int, default=1, help="wrk threads")
    load.add_argument("--subscribers", type=int, default=1_000)
    load.add_argument("--mutations", type=int, default=30, help="measured in scenario (e)")
    parser.add_argument("--postgres", default=PG_SERVER, help="server for scenario (f)")
    parser.add_argument("--pg-database", default="certgraph_bench")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also measure certgraph as another checkout has it (before a change), same run",
    )
    parser.add_argument(
        "--profile",
        metavar="SCENARIO",
        help="also record a py-spy flame graph of certgraph under scenario a, b, c or d",
    )
    return parser.parse_args(argv)


class Bench:
    def __init__(self, args: argparse.Namespace, report: Report) -> None:
        self.args = args
        self.report = report
        # The database copy and the servers' logs of this run: runs side by side keep apart.
        self.run_dir = args.results / "run" / str(os.getpid())

    def wrk(self, server: Server, load: HttpLoad, seconds: float) -> HttpResult:
        args = self.args
        return loadgen.run_wrk(
            server.url, load, seconds=seconds, connections=args.connections, threads=args.threads
        )

    def measure(
        self, server: Server, load: HttpLoad, warmup: bool = True
    ) -> tuple[HttpResult, float]:
        if warmup and self.args.warmup > 0:
            self.wrk(server, load, self.args.warmup)
        with RssMeter(server.pid) as meter:
            result = self.wrk(server, load, self.args.duration)
        return result, meter.peak_mib

    def interleaved(
        self, plan: dict[str, list[tuple[str, Server, HttpLoad]]]
    ) -> dict[tuple[str, str], tuple[list[HttpResult], list[float]]]:
        """Every (label, server, load) of every scenario once per round, alternating order."""
        found: dict[tuple[str, str], tuple[list[HttpResult], list[float]]] = {}
        for number in range(self.args.rounds):
            for scenario, runs in plan.items():
                for label, server, load in runs if number % 2 == 0 else runs[::-1]:
                    result, rss = self.measure(server, load)
                    results, peaks = found.setdefault((scenario, label), ([], []))
                    results.append(result)
                    peaks.append(rss)
                    print(
                        f"  round {number + 1} ({scenario}) {label:<24} {result.rps:9.1f} req/s"
                        f"  p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms"
                        f"  errors {result.errors}  RSS {rss:.0f} MiB",
                        flush=True,
                    )
        return found


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def post(server: Server, token: str, body: bytes) -> Any:
    answer = httpx.post(f"{server.url}/graphql", content=body, headers=headers(token), timeout=30)
    answer.raise_for_status()
    return answer.json()


def check_same_json(certgraph: Server, floor: Server, token: str, bodies: list[bytes]) -> None:
    """The floor must answer exactly what certgraph answers, or the comparison is void."""
    for body in bodies:
        ours, theirs = post(certgraph, token, body), post(floor, token, body)
        if ours != theirs:
            raise SystemExit(
                f"The floor's JSON differs from certgraph's for {body[:80]!r}:\n"
                f"certgraph: {str(ours)[:2000]}\nfloor:     {str(theirs)[:2000]}"
            )
        if "errors" in ours:
            raise SystemExit(f"certgraph answered with errors: {ours}")


def console_load(token: str) -> HttpLoad:
    return HttpLoad(
        operations.body(operations.CONSOLE_LIST, "ConsoleList", {"first": operations.PAGE_SIZE}),
        token,
    )


def vs_floor(report: Report, scenario: str, ours: str, floor: str) -> float:
    mine, base = report.row(scenario, ours), report.row(scenario, floor)
    assert mine is not None and base is not None
    mine.vs_floor = mine.rps / base.rps
    return mine.vs_floor


def ratio_target(
    report: Report, scenario: str, title: str, wanted: str, ours: str, floor: str
) -> None:
    """certgraph's throughput against the floor's; any failed response voids it."""
    ratio = vs_floor(report, scenario, ours, floor)
    errors = sum(
        r.errors for r in report.rows if r.scenario == scenario and r.server in (ours, floor)
    )
    measured = f"{ratio:.2f}x" + (f", {errors} errors" if errors else "")
    report.target(f"{title} vs floor", wanted, measured, ratio >= 0.60 and errors == 0)


def started(*group: Server) -> Callable[[], None]:
    for server in group:
        print(f"starting {server.name} on {server.url}", flush=True)
        server.start()

    def stop() -> None:
        for server in group:
            server.stop()

    return stop


# ---- SQLite: (a) (b) (d) interleaved, then (e), then (c)


def run_sqlite(bench: Bench, url: str, manifest: seeding.Manifest) -> None:
    args, report = bench.args, bench.report
    scenarios = args.scenarios
    log_dir = bench.run_dir
    certgraph = servers.certgraph("certgraph", url, log_dir)
    floor = servers.floor("floor", url, log_dir)
    # For reference: the floor as first written, each statement on aiosqlite's thread.
    plain_floor = servers.floor("floor-aiosqlite", url, log_dir, reads="aiosqlite")
    need_floor = bool(set(scenarios) & set("ab"))
    before = (
        [servers.certgraph("certgraph-before", url, log_dir, args.baseline.absolute())]
        if args.baseline
        else []
    )
    stop = started(certgraph, *([floor, plain_floor] if need_floor else []), *before)
    try:
        main_token = manifest.tokens[seeding.MAIN.format(1)]
        poll = HttpLoad(
            operations.body(operations.STATUS_POLL, "StatusPoll", {"id": operations.ID_SLOT}),
            main_token,
            ids=manifest.poll_ids,
            mode="random",
        )
        if need_floor:
            bodies = [console_load(main_token).body] + [
                operations.body(operations.STATUS_POLL, "StatusPoll", {"id": i})
                for i in manifest.poll_ids[:20]
            ]
            check_same_json(certgraph, floor, main_token, bodies)
            check_same_json(certgraph, plain_floor, main_token, bodies)
            print("floor and certgraph answer the same JSON for (a) and (b)", flush=True)
        plan: dict[str, list[tuple[str, Server, HttpLoad]]] = {}
        if "a" in scenarios:
            load = console_load(main_token)
            plan["a"] = [("floor", floor, load), ("certgraph", certgraph, load)]
            plan["a"].append(("floor-aiosqlite", plain_floor, load))
            plan["a"] += [("certgraph-before", b, load) for b in before]
        if "b" in scenarios:
            plan["b"] = [("floor", floor, poll), ("certgraph", certgraph, poll)]
            plan["b"].append(("floor-aiosqlite", plain_floor, poll))
            plan["b"] += [("certgraph-before", b, poll) for b in before]
        if "d" in scenarios and manifest.deep_cursor:
            plan["d"] = deep_paging(certgraph, manifest)
        found = bench.interleaved(plan)
        for (scenario, label), (results, rss) in found.items():
            report.rows.append(Row.of(scenario, label, results, rss))
        for scenario, title in (("a", "(a) console list"), ("b", "(b) status polling")):
            if scenario in plan:
                if before:
                    vs_floor(report, scenario, "certgraph-before", "floor")
                stretch = " (stretch 0.80x)" if scenario == "a" else ""
                ratio_target(report, scenario, title, f">= 0.60x{stretch}", "certgraph", "floor")
                mine, plain = (
                    report.row(scenario, "certgraph"),
                    report.row(scenario, "floor-aiosqlite"),
                )
                if mine is not None and plain is not None:
                    report.notes.append(
                        f"({scenario}) certgraph vs floor-aiosqlite (each statement on "
                        f"aiosqlite's thread): {mine.rps / plain.rps:.2f}x"
                    )
        if "d" in plan:
            first, deep = (
                report.row("d", "certgraph page 1"),
                report.row("d", "certgraph page 1000"),
            )
            assert first is not None and deep is not None
            cost = first.rps / deep.rps
            report.target(
                "(d) page 1,000 cost / page 1 cost", "<= 1.20x", f"{cost:.2f}x", cost <= 1.2
            )
        if args.profile:
            profile(bench, certgraph, manifest, poll)
    finally:
        stop()
    # A fresh process for each of (e) and (c): their peak RSS is their own, and the
    # certificates (c) leaves under review keep the worker busy afterwards.
    pool = list(manifest.withdrawable)
    for scenario, run in (("e", subscriptions), ("c", withdrawals)):
        if scenario in scenarios:
            fresh = servers.certgraph(f"certgraph-{scenario}", url, log_dir)
            stop = started(fresh)
            try:
                pool = run(bench, fresh, manifest, pool)
            finally:
                stop()


def deep_paging(
    certgraph: Server, manifest: seeding.Manifest
) -> list[tuple[str, Server, HttpLoad]]:
    token = manifest.tokens[seeding.DEEP]
    first_page = operations.body(
        operations.DEEP_PAGE, "DeepPage", {"first": seeding.DEEP_PAGE_SIZE, "after": None}
    )
    deep_page = operations.body(
        operations.DEEP_PAGE,
        "DeepPage",
        {"first": seeding.DEEP_PAGE_SIZE, "after": manifest.deep_cursor},
    )
    for body in (first_page, deep_page):
        page = post(certgraph, token, body)["data"]["certificates"]
        assert len(page["nodes"]) == seeding.DEEP_PAGE_SIZE, page
    return [
        ("certgraph page 1", certgraph, HttpLoad(first_page, token)),
        ("certgraph page 1000", certgraph, HttpLoad(deep_page, token)),
    ]


def subscriptions(
    bench: Bench, certgraph: Server, manifest: seeding.Manifest, pool: list[str]
) -> list[str]:
    args, report = bench.args, bench.report
    needed = args.mutations + 1
    print(f"(e) {args.subscribers} subscribers, {args.mutations} withdrawals", flush=True)
    with RssMeter(certgraph.pid) as meter:
        result = uvloop.run(
            loadgen.fan_out(
                certgraph.url,
                manifest.tokens[seeding.WITHDRAW],
                pool[:needed],
                subscribers=args.subscribers,
                mutations=args.mutations,
            )
        )
    reach = result.reach_all_ms
    p50, p99 = result.percentile(reach, 50), result.percentile(reach, 99)
    report.rows.append(
        Row(
            scenario="e",
            server=f"certgraph {args.subscribers} ws",
            rps=0,
            p50_ms=p50,
            p99_ms=p99,
            rss_mib=meter.peak_mib,
            errors=result.missed,
            requests=len(reach),
            rounds=[{"reach_all_ms": reach, "connect_seconds": result.connect_seconds}],
        )
    )
    deliveries = result.deliveries_ms
    report.notes.append(
        f"(e) one delivery: p50 {result.percentile(deliveries, 50):.1f} ms, "
        f"p99 {result.percentile(deliveries, 99):.1f} ms; {args.subscribers} sockets connected "
        f"in {result.connect_seconds:.1f} s; p50/p99 columns: mutation sent -> last subscriber"
    )
    report.target(
        f"(e) p99 mutation -> all {args.subscribers} subscribers",
        "<= 250 ms",
        f"{p99:.0f} ms",
        p99 <= 250 and result.missed == 0,
    )
    return pool[needed:]


def withdrawals(
    bench: Bench, certgraph: Server, manifest: seeding.Manifest, pool: list[str]
) -> list[str]:
    args, report = bench.args, bench.report
    stamp = time.strftime("%Y%m%d%H%M%S")
    load = HttpLoad(
        operations.body(
            operations.WITHDRAW,
            "Withdraw",
            {"id": operations.ID_SLOT, "key": f"bench-{stamp}-{operations.ID_SLOT}"},
        ),
        manifest.tokens[seeding.WITHDRAW],
        mark=operations.WITHDRAW_SUCCESS,
        mode="once",
    )
    results, peaks = [], []
    for number in range(args.rounds):
        load.ids = pool
        # No warm-up: every request must find a certificate not withdrawn yet.
        result, rss = bench.measure(certgraph, load, warmup=False)
        results.append(result)
        peaks.append(rss)
        # Requests still in flight when wrk stopped may have withdrawn theirs too.
        used = result.requests + args.connections
        if used > len(pool):
            report.notes.append("(c) ran out of withdrawable certificates: raise --withdraw-pool")
        pool = pool[used:]
        print(
            f"  round {number + 1} (c) certgraph withdrawals   {result.rps:9.1f} req/s"
            f"  p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms"
            f"  errors {result.errors}  RSS {rss:.0f} MiB",
            flush=True,
        )
    row = Row.of("c", "certgraph", results, peaks)
    report.rows.append(row)
    report.target(
        "(c) withdrawals on SQLite, 0 errors",
        ">= 300/s, 0 err",
        f"{row.rps:.0f}/s, {row.errors} err",
        row.rps >= 300 and row.errors == 0,
    )
    return pool


def profile(bench: Bench, certgraph: Server, manifest: seeding.Manifest, poll: HttpLoad) -> None:
    """A py-spy flame graph of certgraph while wrk drives one scenario."""
    scenario = bench.args.profile
    loads = {"a": console_load(manifest.tokens[seeding.MAIN.format(1)]), "b": poll}
    if scenario not in loads:
        raise SystemExit("--profile takes a or b")
    out = bench.args.results / f"profile-{scenario}.svg"
    spy = subprocess.Popen(
        [
            str(servers.BIN / "py-spy"),
            "record",
            "--pid",
            str(certgraph.pid),
            "--output",
            str(out),
            "--duration",
            str(round(bench.args.duration)),
            "--rate",
            "250",
            "--nonblocking",
        ],
    )
    time.sleep(0.5)
    bench.wrk(certgraph, loads[scenario], bench.args.duration)
    spy.wait()
    print(f"flame graph: {out}")


# ---- PostgreSQL: (f)


def run_postgres(bench: Bench, plan: seeding.Plan) -> None:
    args, report = bench.args, bench.report
    print(f"(f) seeding {args.pg_database} on {args.postgres}", flush=True)
    url, manifest = asyncio.run(seeding.create_postgres(args.postgres, args.pg_database, plan))
    log_dir = bench.run_dir
    certgraph = servers.certgraph("certgraph-pg", url, log_dir)
    floor = servers.floor("floor-pg", url, log_dir)
    stop = started(certgraph, floor)
    try:
        token = manifest.tokens[seeding.MAIN.format(1)]
        load = console_load(token)
        check_same_json(certgraph, floor, token, [load.body])
        found = bench.interleaved(
            {"f": [("floor-pg", floor, load), ("certgraph-pg", certgraph, load)]}
        )
        for (scenario, label), (results, rss) in found.items():
            report.rows.append(Row.of(scenario, label, results, rss))
        ratio_target(
            report,
            "f",
            "(f) console list on PostgreSQL",
            ">= 0.60x (as a)",
            "certgraph-pg",
            "floor-pg",
        )
    finally:
        stop()
        asyncio.run(seeding.drop_postgres(args.postgres, args.pg_database))


def describe(args: argparse.Namespace) -> dict[str, Any]:
    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    unknown = set(args.scenarios) - set("abcdef")
    if unknown:
        raise SystemExit(f"unknown scenarios: {''.join(sorted(unknown))}")
    loadgen.wrk_path()
    # 1,000 WebSockets on each side of loopback.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    began = time.monotonic()
    report = Report(settings=describe(args))
    bench = Bench(args, report)
    plan = seeding.Plan(args.certs, args.tenants, args.deep_certs, args.withdraw_pool)
    if set(args.scenarios) & set("abcde"):
        url, manifest = seeding.sqlite_database(
            plan, args.results / "data", bench.run_dir, args.reseed
        )
        try:
            run_sqlite(bench, url, manifest)
        finally:
            seeding.discard_copy(bench.run_dir)
    if "f" in args.scenarios:
        run_postgres(bench, plan)
    report.general_targets()
    report.settings["seconds"] = round(time.monotonic() - began)
    print()
    print(report.table())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print(f"\n{report.save(args.results, stamp)} ({report.settings['seconds']} s)")


if __name__ == "__main__":
    main()
