"""`certgraph serve` as a real process: it refuses what it cannot serve safely, then serves."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from server.migrate import head_revisions
from tests.support import CERTGRAPH, cli_env, free_port, run_cli, stop_process, wait_until

pytestmark = pytest.mark.slow


@contextmanager
def serving(database_url: str, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            [CERTGRAPH, "serve", *args],
            env=cli_env(database_url),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        stop_process(process, signal.SIGINT, timeout=15)


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return True


def test_serve_refuses_an_unmigrated_database(sqlite_url: str) -> None:
    result = run_cli("serve", "--port", str(free_port()), database_url=sqlite_url)

    assert result.returncode != 0
    assert "certgraph migrate" in result.stderr


def test_serve_refuses_several_workers_on_sqlite(sqlite_url: str) -> None:
    assert run_cli("migrate", database_url=sqlite_url).returncode == 0

    result = run_cli("serve", "--port", str(free_port()), "--workers", "2", database_url=sqlite_url)

    assert result.returncode != 0
    assert "--workers" in result.stderr
    assert "PostgreSQL" in result.stderr


def test_serve_answers_health_and_readiness_once_migrated(sqlite_url: str, tmp_path: Path) -> None:
    migrated = run_cli("migrate", database_url=sqlite_url)
    assert migrated.returncode == 0, migrated.stderr
    assert all(head in migrated.stdout for head in head_revisions())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"

    with serving(sqlite_url, log, "--port", str(port)) as process:

        def up() -> bool:
            assert process.poll() is None, f"serve exited:\n{log.read_text()}"
            return answers(f"{base}/healthz")

        wait_until(up, what="`certgraph serve` to answer")

        health = httpx.get(f"{base}/healthz")
        ready = httpx.get(f"{base}/readyz")
        metrics = httpx.get(f"{base}/metrics")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert metrics.status_code == 200
    assert 'route="/readyz"' in metrics.text
    assert process.returncode == 0, log.read_text()
