"""`make soak`, quick mode, end to end: every hostile item gets a row with measured values.

The figures themselves (stalls, RSS) are performance results the report states as met or not;
this test holds the harness to producing all of them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import soak

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).absolute().parent.parent.parent


def test_the_quick_soak_measures_every_item_and_states_both_targets(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--quick", "--results", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    rows = json.loads((tmp_path / "soak-latest.json").read_text())["rows"]
    labels = [label for label, _ in soak.ITEMS] + [soak.TOGETHER]
    assert [row["item"] for row in rows] == labels
    for row in rows:
        assert row["healthz_ms"] is not None and row["healthz_ms"] > 0, row
        assert row["pong_ms"] is not None and row["pong_ms"] > 0, row
        assert row["rss_before_mib"] > 0 and row["rss_after_mib"] > 0, row
        assert row["rss_peak_mib"] >= row["rss_before_mib"], row
        # Every item got answers from the server, counted: "200 data x3", "close 1009 x1", ...
        assert re.search(r" x\d+", row["answers"]), row
        assert "not run" not in row["answers"] and not row["failed"], row

    table = done.stdout
    for label in labels:
        assert re.search(rf"^{re.escape(label)}\s+[\d,]+\s+[\d,]+\s", table, re.M), label
    assert re.search(r"^worst loop stall .*<= 100 ms .*(met|NOT MET)$", table, re.M)
    assert re.search(r"^RSS end - start .*<= 20 MiB .*(met|NOT MET)$", table, re.M)
