"""Real services for the tests: a private Azurite per session and a fresh PostgreSQL database per test.

Azurite comes from the repo's pinned npm package (``npm ci`` installs it) and listens on free
ports of 127.0.0.1, so a test run never touches a developer's emulator. PostgreSQL is the
server at ``POSTGRES_DSN`` (default: the local one on 127.0.0.1:5432); each test that needs it
gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from shared.tools.azurite import Azurite

BASE_DSN = os.environ.get("POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


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
        from shared.app import triggers

        triggers.reset()
        with psycopg.connect(_admin_dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def services(storage_clean: Azurite, pg_dsn: str) -> Iterator[tuple[Azurite, str]]:
    """Azurite emptied and a fresh database, with the app's cached clients rebuilt for them."""
    from shared.app import triggers

    triggers.reset()
    yield storage_clean, pg_dsn
    triggers.reset()
