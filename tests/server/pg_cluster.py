"""Test helper: a private PostgreSQL cluster that a test may stop, crash and start at will.

The machine's shared PostgreSQL serves every other test, so fault tests never touch it: they
initdb a cluster of their own into a temporary directory, as the `postgres` OS user
(PostgreSQL refuses to run as root), on a free port with trust auth and its socket in the
same directory. The directory is removed when the cluster is.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import free_port

OS_USER = "postgres"


def binaries() -> Path:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if not found:
        raise AssertionError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return Path(found[-1]).parent


class Cluster:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "server.log"
        self.port = port
        self.bin = binaries()

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/certgraph"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, timeout: float = 60) -> None:
        subprocess.run(
            ["runuser", "-u", OS_USER, "--", *command],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "--pgdata",
            str(self.data),
            "--auth",
            "trust",
            "--username",
            "postgres",
            "--encoding",
            "UTF8",
            "--no-instructions",
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bin / "pg_ctl"),
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log),
            "--options",
            options,
            "--wait",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean shutdown that ends every session; `immediate`: a crash, recovered
        from the write-ahead log at the next start."""
        self._run(str(self.bin / "pg_ctl"), "--pgdata", str(self.data), "--mode", mode, "stop")

    def create_database(self) -> None:
        self._run(
            str(self.bin / "psql"),
            "-h",
            str(self.directory),
            "-p",
            str(self.port),
            "-d",
            "postgres",
            "-c",
            "CREATE DATABASE certgraph",
        )


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    directory = Path(tempfile.mkdtemp(prefix="certgraph-pg-"))
    shutil.chown(directory, OS_USER, OS_USER)
    os.chmod(directory, 0o700)
    cluster = Cluster(directory, free_port())
    try:
        cluster.init()
        cluster.start()
        cluster.create_database()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            cluster.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)
