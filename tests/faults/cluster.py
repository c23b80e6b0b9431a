"""Services a test may break: a throwaway PostgreSQL cluster and a private Azurite.

``PgCluster`` initialises a cluster of its own in a temporary folder, on a free port of
127.0.0.1, so that stopping it (``stop("immediate")`` is a crash: no checkpoint, every backend
killed) or restarting it harms nothing else. ``initdb`` refuses to run as root, so as root every
PostgreSQL binary runs as the ``postgres`` user.

``BreakableAzurite`` is the tests' ``Azurite`` with a graceful stop. Azurite keeps its metadata
in LokiJS files that it saves every 5 s and on shutdown; a SIGKILL therefore loses writes that
it had acknowledged, which Azure Storage never does. Restarting it with SIGTERM (its own
shutdown) makes the service vanish for the clients (connections refused, in-flight requests
cut) without that emulator artefact.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from shared.tools.azurite import AZURITE, Azurite, free_port, wait_for_port

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


def pg_bin() -> Path:
    """The folder of ``initdb``/``pg_ctl``: PostgreSQL 15 as on the CI machine, or whatever is on PATH."""
    for candidate in (os.environ.get("PIPELINE_PG_BIN", ""), *PG_BIN_CANDIDATES):
        if candidate and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError("no PostgreSQL binaries found (apt-get install postgresql, or set PIPELINE_PG_BIN)")


class PgCluster:
    """A private PostgreSQL cluster: ``start()``, ``stop(mode)``, ``restart()`` are one call each."""

    def __init__(self, root: Path | None = None) -> None:
        self.bin = pg_bin()
        self.root = root or Path(tempfile.mkdtemp(prefix="pg-fault-"))  # every parent must be open to postgres
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            pwd.getpwnam("postgres")  # KeyError: there is no postgres user to run the server as
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self.stops: list[str] = []  # every stop, by mode: what the tests assert happened

    # --- lifecycle -----------------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as_postgres, *args], check=check, capture_output=True, text=True, timeout=120)

    def init(self) -> PgCluster:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.root} "
            "-c fsync=off -c full_page_writes=off -c max_connections=60 -c shared_buffers=64MB"
        )  # fsync off: a crash of the server (not of the machine) loses nothing that was committed
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        wait_for_port(self.port)

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: a crash (backends killed, recovery at the next start); ``fast``: a clean stop."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.stops.append(mode)

    def restart(self, mode: str = "immediate", down_seconds: float = 0.0) -> None:
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()

    @property
    def running(self) -> bool:
        return self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "status", check=False).returncode == 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.running:
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # --- databases -----------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname} connect_timeout=5"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=True, application_name="fault-test")

    def create_database(self, name: str) -> str:
        with self.connect() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with self.connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started private cluster, stopped and deleted afterwards whatever happens."""
    cluster = PgCluster()
    try:
        cluster.init().start()
        yield cluster
    finally:
        cluster.close()


class BreakableAzurite(Azurite):
    """A private Azurite whose ``restart()`` keeps its data and ports (see the module doc)."""

    def __init__(self, location: Path | None = None, debug_log: Path | None = None) -> None:
        super().__init__(location or Path(tempfile.mkdtemp(prefix="azurite-fault-")))
        self.restarts = 0
        self.closed = False
        self.debug_log = debug_log  # Azurite's own debug log (every request), when a run needs explaining
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start it, unless it was closed: a restart scheduled by a test that has already
        failed must not leave an emulator behind."""
        with self._lock:
            if self.closed:
                return
            if self.debug_log is None:
                super().start()
                return
            self.proc = subprocess.Popen(
                [
                    str(AZURITE), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--location", str(self.location),
                    "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                    "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
                    "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
                    "--debug", str(self.debug_log),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_for_port(self.blob_port)
            wait_for_port(self.queue_port)

    def stop(self, graceful: bool = True) -> None:
        proc = self.proc
        if proc is None:
            return
        if graceful:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        else:
            proc.kill()
        proc.wait()
        self.proc = None

    def restart(self, down_seconds: float = 1.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.stop(graceful=False)
        shutil.rmtree(self.location, ignore_errors=True)


@contextlib.contextmanager
def private_azurite() -> Iterator[BreakableAzurite]:
    emulator = BreakableAzurite()
    try:
        emulator.start()
        yield emulator
    finally:
        emulator.close()
