"""The loader against a real PostgreSQL: per-file replace, versions, idempotent DDL."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import psycopg

from shared.app import ingest, settings
from shared.app.load import Loader
from shared.core.contract import load_contracts
from shared.postgres import connections
from shared.storage.blobs import FolderStore

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = load_contracts(ROOT / "contracts")
HEADER = b"Date,Domain,Location,Value,Transaction_count\n"


def make(tmp_path: Path, dsn: str) -> tuple[FolderStore, Loader]:
    store = FolderStore(tmp_path / "store")
    cache = connections.ConnectionCache(lambda: psycopg.connect(dsn, autocommit=True))
    return store, Loader(cache.get, store, CONTRACTS, reader_role=settings.reader_role())


def drop(store: FolderStore, name: str, data: bytes, age: timedelta = timedelta(0)) -> dict:
    path = store.path("raw", name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stamp = path.stat().st_mtime - age.total_seconds()
    os.utime(path, (stamp, stamp))
    return ingest.ingest(store, name, CONTRACTS)


def totals(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT domain, total_value FROM analytics.bank_transactions_daily ORDER BY domain").fetchall()


def test_an_older_version_arriving_late_is_superseded_and_changes_nothing(tmp_path, pg_dsn):
    store, loader = make(tmp_path, pg_dsn)
    old = drop(store, "bank_transactions/f.csv", HEADER + b"1/1/2022,RETAIL,Goa,1,1\n", age=timedelta(hours=1))
    new = drop(store, "bank_transactions/f.csv", HEADER + b"1/1/2022,RETAIL,Goa,2,1\n")
    assert old["source"]["etag"] != new["source"]["etag"]

    assert loader.load(new).status == "loaded"
    assert loader.load(old).status == "superseded"
    assert totals(pg_dsn) == [("RETAIL", 2)]
    assert loader.load(new).status == "duplicate"


def test_a_refused_file_is_recorded_and_leaves_the_previous_contribution_in_place(tmp_path, pg_dsn):
    store, loader = make(tmp_path, pg_dsn)
    good = drop(store, "bank_transactions/f.csv", HEADER + b"1/1/2022,RETAIL,Goa,5,1\n", age=timedelta(hours=1))
    loader.load(good)
    bad = drop(store, "bank_transactions/f.csv", b"not,a,bank,file\n1,2,3,4\n")
    assert bad["status"] == "rejected"
    assert loader.load(bad).status == "rejected"
    assert totals(pg_dsn) == [("RETAIL", 5)]
    with psycopg.connect(pg_dsn) as conn:
        statuses = dict(conn.execute("SELECT status, error_code FROM pipeline.ledger").fetchall())
    assert statuses == {"loaded": None, "rejected": "missing_columns"}


def test_schema_objects_are_created_once_and_survive_a_second_loader(tmp_path, pg_dsn):
    store, first = make(tmp_path, pg_dsn)
    first.load(drop(store, "bank_transactions/a.csv", HEADER + b"1/1/2022,RETAIL,Goa,5,1\n"))
    _, second = make(tmp_path, pg_dsn)
    second.load(drop(store, "bank_transactions/b.csv", HEADER + b"1/1/2022,RETAIL,Goa,6,1\n"))
    assert totals(pg_dsn) == [("RETAIL", 11)]
    with psycopg.connect(pg_dsn) as conn:
        applied = conn.execute("SELECT count(*) FROM pipeline.warehouse_ddl").fetchone()[0]
    assert applied == 1


def test_the_ml_applications_role_can_read_the_views_and_nothing_else(tmp_path, pg_dsn, monkeypatch):
    role = f"ml_reader_{os.getpid()}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role}")
    try:
        monkeypatch.setenv("PIPELINE_READER_ROLE", role)
        store, loader = make(tmp_path, pg_dsn)
        loader.load(drop(store, "bank_transactions/a.csv", HEADER + b"1/1/2022,RETAIL,Goa,5,1\n"))
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            can = conn.execute(
                "SELECT has_table_privilege(%s, 'analytics.bank_transactions_daily', 'SELECT'),"
                " has_table_privilege(%s, 'analytics.bank_transactions_daily_by_file', 'SELECT'),"
                " has_table_privilege(%s, 'pipeline.ledger', 'SELECT')",
                (role, role, role),
            ).fetchone()
        assert can == (True, False, False)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_a_cached_connection_killed_while_idle_is_replaced_before_it_is_used(pg_dsn):
    cache = connections.ConnectionCache(lambda: psycopg.connect(pg_dsn, autocommit=True), check_after=0.0)
    first = cache.get()
    pid = first.info.backend_pid
    with psycopg.connect(pg_dsn, autocommit=True) as admin:  # as a server restart would
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    second = cache.get()
    assert second is not first and second.info.backend_pid != pid
    assert second.execute("SELECT 1").fetchone() == (1,)


def test_a_late_request_made_under_an_older_contract_leaves_the_good_ledger_row_alone(tmp_path, pg_dsn):
    from dataclasses import replace

    store, _ = make(tmp_path, pg_dsn)
    v2 = {"bank_transactions": replace(CONTRACTS["bank_transactions"], version=2)}
    cache = connections.ConnectionCache(lambda: psycopg.connect(pg_dsn, autocommit=True))
    loader = Loader(cache.get, store, v2)
    old_request = drop(store, "bank_transactions/f.csv", HEADER + b"1/1/2022,RETAIL,Goa,5,1\n")  # made under v1
    new_request = ingest.ingest(store, "bank_transactions/f.csv", v2)  # the same version, re-ingested under v2
    assert loader.load(new_request).status == "loaded"

    late = loader.load(old_request)  # the v1 request, delivered again after v2 loaded

    assert late.status == "stale" and "loaded since" in late.detail
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT status, run_id, contract_version, error_code FROM pipeline.ledger").fetchall()
    assert rows == [("loaded", new_request["run_id"], 2, None)]
    assert totals(pg_dsn) == [("RETAIL", 5)]


def test_a_refusal_delivered_after_the_same_version_loaded_changes_nothing(tmp_path, pg_dsn):
    store, loader = make(tmp_path, pg_dsn)
    name = "newfeed_x/f.csv"  # refused unknown_dataset first ...
    refused = drop(store, name, HEADER + b"1/1/2022,RETAIL,Goa,5,1\n")
    assert refused["error"]["code"] == "unknown_dataset"
    good = dict(drop(store, "bank_transactions/g.csv", HEADER + b"1/1/2022,RETAIL,Goa,5,1\n"))
    assert loader.load(good).status == "loaded"
    late_refusal = {**good, "status": "rejected", "run_id": "20000101T000000000Z-0000", "error": refused["error"]}

    assert loader.load(late_refusal).status == "stale"

    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT status, error_code FROM pipeline.ledger").fetchall() == [("loaded", None)]
