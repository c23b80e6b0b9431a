"""Real services for the tests: a private Azurite per session and a fresh PostgreSQL database per test.

Azurite comes from the repo's pinned npm package (``npm ci`` installs it) and listens on free
ports of 127.0.0.1, so a test run never touches a developer's emulator. PostgreSQL is the
server at ``POSTGRES_DSN`` (default: the local one on 127.0.0.1:5432); each test that needs it
gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BASE_DSN = os.environ.get("POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Azurite:
    """A private Azurite process; ``stop()``/``start()`` keep its data and ports."""

    def __init__(self, location: Path) -> None:
        if not AZURITE.exists():
            raise RuntimeError("Azurite is not installed: run `npm ci` in the repo (scripts/test does)")
        self.location = location
        self.blob_port, self.queue_port, self.table_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/devstoreaccount1;"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/devstoreaccount1;"
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                str(AZURITE), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--location", str(self.location),
                "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
                "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.blob_port)
        wait_for_port(self.queue_port)

    def stop(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    location = Path(tempfile.mkdtemp(prefix="azurite-"))
    emulator = Azurite(location)
    emulator.start()
    for setting in ("DataStorage", "AzureWebJobsStorage"):  # the app's connection setting names
        os.environ[setting] = emulator.connection_string
    try:
        yield emulator
    finally:
        emulator.stop()
        shutil.rmtree(location, ignore_errors=True)


@pytest.fixture
def storage_clean(azurite: Azurite) -> Azurite:
    """Empty every container and queue, so a test sees only its own blobs and messages."""
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    for container in blobs.list_containers():
        blobs.delete_container(container.name)
    queues = QueueServiceClient.from_connection_string(azurite.connection_string)
    for queue in queues.list_queues():
        queues.delete_queue(queue.name)
    return azurite


def _admin_dsn() -> str:
    return psycopg.conninfo.make_conninfo(BASE_DSN, dbname="postgres")


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A fresh, empty database for one test; its DSN is also set as POSTGRES_DSN."""
    name = f"pipeline_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(_admin_dsn(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {BASE_DSN!r} (scripts/test starts it): {exc}")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(BASE_DSN, dbname=name)
    previous = os.environ.get("POSTGRES_DSN")
    os.environ["POSTGRES_DSN"] = dsn
    try:
        yield dsn
    finally:
        if previous is None:
            os.environ.pop("POSTGRES_DSN", None)
        else:
            os.environ["POSTGRES_DSN"] = previous
        from shared import triggers

        triggers.reset()
        with psycopg.connect(_admin_dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def services(storage_clean: Azurite, pg_dsn: str) -> Iterator[tuple[Azurite, str]]:
    """Azurite emptied and a fresh database, with the app's cached clients rebuilt for them."""
    from shared import triggers

    triggers.reset()
    yield storage_clean, pg_dsn
    triggers.reset()
