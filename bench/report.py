"""The benchmark's results: rows per scenario and server, the targets, the table and the JSON."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import HttpResult

RSS_LIMIT_MIB = 150
TAIL_LIMIT = 10  # p99 at most this many times p50


def columns(lines: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Aligned text columns, the first line a heading underlined with dashes; the columns
    numbered in `right` are aligned right."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        cells = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


@dataclass
class Row:
    scenario: str
    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    rss_mib: float
    errors: int = 0
    requests: int = 0
    vs_floor: float | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tail(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms else math.inf

    @classmethod
    def of(
        cls, scenario: str, server: str, runs: Sequence[HttpResult], rss: Sequence[float]
    ) -> Row:
        """Medians over the rounds; the highest peak RSS."""
        return cls(
            scenario=scenario,
            server=server,
            rps=statistics.median(r.rps for r in runs),
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            rss_mib=max(rss),
            errors=sum(r.errors for r in runs),
            requests=sum(r.requests for r in runs),
            rounds=[{**asdict(r), "rps": r.rps} for r in runs],
        )


@dataclass
class Target:
    name: str
    wanted: str
    measured: str
    met: bool


@dataclass
class Report:
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, scenario: str, server: str) -> Row | None:
        return next((r for r in self.rows if r.scenario == scenario and r.server == server), None)

    def target(self, name: str, wanted: str, measured: str, met: bool) -> None:
        self.targets.append(Target(name, wanted, measured, met))

    def general_targets(self) -> None:
        for row in self.rows:
            if row.server.startswith(("floor", "certgraph-before")):
                continue
            self.target(
                f"({row.scenario}) {row.server}: p99 <= {TAIL_LIMIT}x p50",
                f"<= {TAIL_LIMIT}x",
                f"{row.tail:.1f}x",
                row.tail <= TAIL_LIMIT,
            )
        peak = max(
            (r for r in self.rows if not r.server.startswith(("floor", "certgraph-before"))),
            default=None,
            key=lambda r: r.rss_mib,
        )
        if peak is not None:
            self.target(
                "peak RSS under load (certgraph)",
                f"<= {RSS_LIMIT_MIB} MiB",
                f"{peak.rss_mib:.0f} MiB ({peak.scenario})",
                peak.rss_mib <= RSS_LIMIT_MIB,
            )

    def table(self) -> str:
        head = (
            "scenario",
            "server",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99/p50",
            "RSS MiB",
            "vs floor",
            "errors",
        )
        lines = [head]
        for r in self.rows:
            lines.append(
                (
                    r.scenario,
                    r.server,
                    f"{r.rps:,.0f}" if r.rps >= 100 else f"{r.rps:,.1f}",
                    f"{r.p50_ms:.1f}",
                    f"{r.p99_ms:.1f}",
                    f"{r.tail:.1f}",
                    f"{r.rss_mib:.0f}",
                    f"{r.vs_floor:.2f}x" if r.vs_floor is not None else "",
                    str(r.errors),
                )
            )
        out = columns(lines, right={2, 3, 4, 5, 6, 7, 8})
        out.append("")
        name_width = max((len(t.name) for t in self.targets), default=0)
        for t in self.targets:
            verdict = "met" if t.met else "NOT MET"
            out.append(f"{t.name.ljust(name_width)}  {t.wanted:>14}  {t.measured:>18}  {verdict}")
        for note in self.notes:
            out.append(f"note: {note}")
        return "\n".join(out)

    def save(self, directory: Path, stamp: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        data = {
            "settings": self.settings,
            "rows": [{**asdict(r), "p99_over_p50": r.tail} for r in self.rows],
            "targets": [asdict(t) for t in self.targets],
            "notes": self.notes,
        }
        path = directory / f"bench-{stamp}.json"
        text = json.dumps(data, indent=2, default=str)
        path.write_text(text)
        (directory / "latest.json").write_text(text)
        return path
