"""The curated zone's Delta tables: written to a real Azurite, read back without our code.

Readers are polars (``pl.read_delta``, delta-rs) and DuckDB (its ``delta`` extension, from a pip
package, loaded from disk: nothing is downloaded). What they read is compared with the plain
Python recomputation of ``tests/oracle.py`` and with the PostgreSQL view. The first tests need
no services: how the connection settings become delta-rs options, the statistics, the types.
"""

from __future__ import annotations

import argparse
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import psycopg
import pytest

from shared.core import lake as core_lake
from shared.core import layout
from shared.storage import lake
from tests import oracle
from tests.test_end_to_end import DATASET, blobs, names, run_host, sample, upload, view_rows

CLEAN = f"{DATASET}/tables/clean"
DAILY = f"{DATASET}/tables/bank_transactions_daily_by_file"


# --- no services ---------------------------------------------------------------------------------


def test_the_emulator_shorthand_becomes_object_store_emulator_options():
    assert lake.storage_options(env={"DataStorage": "UseDevelopmentStorage=true"}) == {
        "use_emulator": "true",
        "account_name": "devstoreaccount1",
        "allow_http": "true",
    }


def test_a_connection_string_gives_its_account_key_and_blob_endpoint():
    text = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:4711/devstoreaccount1;"
    assert lake.storage_options(env={"DataStorage": text}) == {
        "account_name": "devstoreaccount1",
        "account_key": "a2V5",
        "azure_endpoint": "http://127.0.0.1:4711/devstoreaccount1",
        "allow_http": "true",
    }
    cloud = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.usgovcloudapi.net"
    assert lake.storage_options(env={"DataStorage": cloud})["azure_endpoint"] == "https://acct.blob.core.usgovcloudapi.net"


def test_the_function_apps_identity_connection_authenticates_delta_rs_with_the_user_assigned_identity():
    # What infra/app/function.bicep sets, and what the Functions host (Flex Consumption too) puts
    # in the environment of the worker: the identity endpoint (and IDENTITY_HEADER, which
    # object_store reads by itself when it asks that endpoint for a token).
    env = {
        "DataStorage__blobServiceUri": "https://stpipeline.blob.core.windows.net/",
        "DataStorage__queueServiceUri": "https://stpipeline.queue.core.windows.net/",
        "DataStorage__credential": "managedidentity",
        "DataStorage__clientId": "00000000-1111-2222-3333-444444444444",
        "IDENTITY_ENDPOINT": "http://localhost:8081/msi/token",
        "IDENTITY_HEADER": "secret-the-host-sets",
    }
    options = lake.storage_options(env=env)
    assert options == {
        "account_name": "stpipeline",
        "azure_endpoint": "https://stpipeline.blob.core.windows.net",
        "azure_client_id": "00000000-1111-2222-3333-444444444444",
        "azure_msi_endpoint": "http://localhost:8081/msi/token",
    }
    assert not {"account_key", "sas_key", "azure_use_azure_cli"} & set(options), "no key: shared keys are off"
    assert "secret-the-host-sets" not in json.dumps(options)
    # without the host's endpoint (a VM, a container), object_store asks Azure's instance endpoint
    del env["IDENTITY_ENDPOINT"]
    assert "azure_msi_endpoint" not in lake.storage_options(env=env)


def test_an_identity_connection_without_a_credential_uses_the_developers_az_login():
    options = lake.storage_options(env={"DataStorage__blobServiceUri": "https://dev.blob.core.windows.net"})
    assert options["azure_use_azure_cli"] == "true" and "azure_client_id" not in options


def test_no_storage_setting_is_an_error_that_names_it():
    with pytest.raises(RuntimeError, match="DataStorage"):
        lake.storage_options(env={})


def test_statistics_are_safe_bounds_for_readers_that_skip_files(tmp_path):
    path = tmp_path / "f.parquet"
    pl.DataFrame(
        {
            "n": [3, None, -7],
            "d": [date(2022, 1, 2), date(2021, 5, 6), None],
            "s": ["b", "a" * 40, "c"],
            "t": [datetime(2022, 1, 1, 0, 0, 0, 1500, tzinfo=UTC), datetime(2022, 1, 1, 0, 0, 1, 999, tzinfo=UTC), None],
            "x": [Decimal("1.5"), None, Decimal("2.0")],
        }
    ).write_parquet(path)
    rows, text = core_lake.file_stats(path)
    stats = json.loads(text)
    assert rows == stats["numRecords"] == 3
    assert stats["nullCount"] == {"n": 1, "d": 1, "s": 0, "t": 1, "x": 1}
    # no minimum for s: a 40-character one is longer than a reader's statistics keep
    assert stats["minValues"] == {"n": -7, "d": "2021-05-06", "t": "2022-01-01T00:00:00.001Z"}
    assert stats["maxValues"] == {"n": 3, "d": "2022-01-02", "s": "c", "t": "2022-01-01T00:00:01.001Z"}  # rounded up


def test_lake_columns_are_signed_because_delta_has_no_unsigned_types():
    assert core_lake.delta_type(pl.Int64()) == "long"
    assert core_lake.delta_type(pl.Decimal(38, 2)) == "decimal(38,2)"
    assert core_lake.delta_type(pl.Datetime("us", "UTC")) == "timestamp"
    with pytest.raises(ValueError, match="no Delta type"):
        core_lake.delta_type(pl.UInt32())


def test_the_clean_rows_line_number_is_a_signed_64_bit_integer(tmp_path):
    from tests.helpers import transform_bytes

    result = transform_bytes(b"Date,Domain,Location,Value,Transaction_count\n1/5/2022,RETAIL,Goa,100,1\n", tmp_path)
    assert pl.read_parquet_schema(result.outputs.clean_parts[0])["_line"] == pl.Int64


def test_a_runs_transaction_number_is_stable_and_never_the_removed_one():
    run = layout.new_run_id()
    assert core_lake.run_version(run) == core_lake.run_version(run) > core_lake.removed_version()
    assert core_lake.run_version(run) < 1 << 63
    assert core_lake.run_version(run) != core_lake.run_version(layout.new_run_id())


# --- readers -------------------------------------------------------------------------------------


def read(path: str, **kwargs) -> pl.DataFrame:
    return pl.read_delta(lake.table_uri(path), storage_options=lake.storage_options(), **kwargs)


def duckdb_sql(azurite, query: str) -> pl.DataFrame:
    """DuckDB with the delta and azure extensions from their pip packages, nothing downloaded."""
    import os

    import duckdb
    import duckdb_extension_azure
    import duckdb_extension_delta

    # delta-kernel's object store finds Azurite's port here (DuckDB's connection string secret
    # gives it the account and key; with the emulator's account it goes to the emulator)
    os.environ["AZURITE_BLOB_STORAGE_URL"] = f"http://127.0.0.1:{azurite.blob_port}"
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for module in (duckdb_extension_azure, duckdb_extension_delta):
        con.execute(f"LOAD '{next(Path(module.__file__).parent.rglob('*.duckdb_extension'))}'")
    con.execute(f"CREATE SECRET lake (TYPE azure, CONNECTION_STRING '{azurite.connection_string}')")
    return con.sql(query).pl()


def merged_daily(frame: pl.DataFrame) -> set[tuple]:
    """The lake's per-file aggregates merged by key, as the PostgreSQL view merges them."""
    merged = frame.group_by("txn_date", "domain", "location").agg(
        pl.col("total_value").sum(), pl.col("transaction_count").sum(), pl.col("record_count").sum()
    )
    return {(r[0], r[1], r[2], Decimal(r[3]), Decimal(r[4]), int(r[5])) for r in merged.iter_rows()}


def daily_from_clean(frame: pl.DataFrame) -> set[tuple]:
    """The aggregate recomputed from the clean table's rows (independently of the aggregate table)."""
    agg = frame.group_by("txn_date", "domain", "location").agg(
        pl.col("value").sum(), pl.col("transaction_count").sum(), pl.len().alias("records")
    )
    return {(r[0], r[1], r[2], Decimal(r[3]), Decimal(r[4]), int(r[5])) for r in agg.iter_rows()}


def manifests(azurite) -> list[dict]:
    service = blobs(azurite)
    docs = [
        json.loads(service.get_blob_client("curated", n).download_blob().readall())
        for n in names(azurite, "curated", f"{DATASET}/manifests/")
    ]
    return sorted(docs, key=lambda d: d["run_id"])


# --- written to Azurite, read back ---------------------------------------------------------------


def test_the_lake_tables_read_back_in_polars_and_duckdb_equal_an_independent_recomputation(services, tmp_path):
    azurite, dsn = services
    a, b = sample(tmp_path, 6_000, seed=21), sample(tmp_path, 4_000, seed=22)
    upload(azurite, f"{DATASET}/a.csv", a.read_bytes())
    upload(azurite, f"{DATASET}/b.csv", b.read_bytes())
    run_host()
    both = oracle.bank(a).add(oracle.bank(b))

    clean = read(CLEAN)
    assert clean.height == both.valid
    assert clean.schema["_line"] == pl.Int64 and clean.schema["_source_key"] == pl.String
    assert daily_from_clean(clean) == both.view_rows()
    assert merged_daily(read(DAILY)) == both.view_rows() == view_rows(dsn)

    uri = lake.table_uri(CLEAN)
    counted = duckdb_sql(azurite, f"SELECT _source_blob, count(*) AS n FROM delta_scan('{uri}') GROUP BY ALL ORDER BY 1")
    assert counted.rows() == [(f"{DATASET}/a.csv", oracle.bank(a).valid), (f"{DATASET}/b.csv", oracle.bank(b).valid)]
    ducked = duckdb_sql(azurite, f"SELECT * FROM delta_scan('{lake.table_uri(DAILY)}')")
    assert merged_daily(ducked) == both.view_rows()
    # a filter that the readers may answer by skipping files on their statistics loses nothing
    june = duckdb_sql(azurite, f"SELECT count(*) FROM delta_scan('{uri}') WHERE txn_date >= DATE '2022-06-01'").item()
    assert june == clean.filter(pl.col("txn_date") >= date(2022, 6, 1)).height
    assert (
        pl.scan_delta(uri, storage_options=lake.storage_options()).filter(pl.col("txn_date") >= date(2022, 6, 1)).collect().height
        == june
    )


def test_the_manifest_and_the_report_name_each_table_and_the_commit_that_published_the_run(services, tmp_path):
    azurite, _ = services
    upload(azurite, f"{DATASET}/a.csv", sample(tmp_path, 2_000, seed=23).read_bytes())
    run_host()
    [doc] = manifests(azurite)
    tables = doc["outputs"]["lake"]["tables"]
    assert {o: t["path"] for o, t in tables.items()} == {"clean": CLEAN, "aggregate:daily": DAILY}
    for output, t in tables.items():
        history = lake.history(lake.table_uri(t["path"]), lake.storage_options())
        [commit] = [h for h in history if h.get("pipeline.run_id") == doc["run_id"]]
        assert t["version"] == commit["version"], output
        assert json.loads(commit["userMetadata"])["contract_version"] == 1
    page = blobs(azurite).get_blob_client("curated", doc["outputs"]["report"]["name"]).download_blob().readall().decode()
    assert f"curated/{CLEAN}" in page and "Lake tables" in page


def test_a_new_version_replaces_its_source_in_one_commit_and_no_table_version_ever_holds_two(services, tmp_path):
    azurite, dsn = services
    a, b, a2 = sample(tmp_path, 3_000, seed=24), sample(tmp_path, 3_000, seed=25), sample(tmp_path, 2_000, seed=26)
    upload(azurite, f"{DATASET}/a.csv", a.read_bytes())
    upload(azurite, f"{DATASET}/b.csv", b.read_bytes())
    run_host()
    before = read(CLEAN)
    upload(azurite, f"{DATASET}/a.csv", a2.read_bytes())
    run_host()

    after = read(CLEAN)
    assert after.filter(pl.col("_source_blob") == f"{DATASET}/a.csv").height == oracle.bank(a2).valid
    assert merged_daily(read(DAILY)) == oracle.bank(a2).add(oracle.bank(b)).view_rows() == view_rows(dsn)
    history = lake.history(lake.table_uri(CLEAN), lake.storage_options())
    latest = history[0]["version"]
    for version in range(1, latest + 1):  # every state a reader could ever have seen
        runs = read(CLEAN, version=version).group_by("_source_blob").agg(pl.col("_run_id").n_unique())
        assert (runs["_run_id"] == 1).all(), f"version {version} holds two runs of one source"
    # the replaced rows are still there for a reader travelling back (until the vacuum)
    previous = latest - 1
    assert read(CLEAN, version=previous).sort("_source_blob", "_line").equals(before.sort("_source_blob", "_line"))


def test_a_duplicate_or_superseded_delivery_commits_nothing_and_its_staged_files_go(services, tmp_path):
    from shared.core import documents
    from shared.storage.queues import QueueSender

    azurite, dsn = services
    upload(azurite, f"{DATASET}/a.csv", sample(tmp_path, 2_000, seed=27).read_bytes())
    run_host()
    [old] = manifests(azurite)
    upload(azurite, f"{DATASET}/a.csv", sample(tmp_path, 2_500, seed=28).read_bytes())
    run_host()
    [new] = manifests(azurite)  # the older run's manifest was pruned
    versions = {p: read(p).height for p in (CLEAN, DAILY)}
    commits = {p: len(lake.history(lake.table_uri(p), lake.storage_options())) for p in (CLEAN, DAILY)}

    QueueSender().send("load-requests", documents.load_request(new))  # delivered again
    QueueSender().send("load-requests", documents.load_request(old))  # an older version, late
    run_host()

    assert {p: len(lake.history(lake.table_uri(p), lake.storage_options())) for p in (CLEAN, DAILY)} == commits
    assert {p: read(p).height for p in (CLEAN, DAILY)} == versions
    assert set(read(CLEAN)["_run_id"].unique()) == {new["run_id"]}
    assert view_rows(dsn) == merged_daily(read(DAILY))


def test_a_lake_commit_retried_after_a_crash_is_recognised_and_not_made_twice(services, tmp_path, monkeypatch):
    azurite, dsn = services
    real = lake.publish
    crashed: list[str] = []

    def publish_then_crash(uri, *args, **kwargs):
        done = real(uri, *args, **kwargs)
        if not crashed:  # the first table's commit lands, then the worker dies
            crashed.append(uri)
            raise ConnectionError("the instance went away after the commit")
        return done

    monkeypatch.setattr(lake, "publish", publish_then_crash)
    upload(azurite, f"{DATASET}/a.csv", sample(tmp_path, 2_000, seed=29).read_bytes())
    run_host()  # PostgreSQL committed, the lake half way: the message comes back, the ledger says duplicate

    [doc] = manifests(azurite)
    for path in (CLEAN, DAILY):
        history = lake.history(lake.table_uri(path), lake.storage_options())
        assert sum(1 for h in history if h.get("pipeline.run_id") == doc["run_id"]) == 1, path
    assert crashed == [lake.table_uri(CLEAN)]
    assert merged_daily(read(DAILY)) == view_rows(dsn)


def test_postgres_and_the_lake_agree_after_loads_replays_new_versions_forgets_and_a_failed_load(services, tmp_path, monkeypatch):
    from shared.app import load as app_load
    from shared.core.errors import PipelineError
    from shared.storage.queues import QueueSender
    from shared.tools import operations

    azurite, dsn = services

    def agree() -> None:
        assert merged_daily(read(DAILY)) == view_rows(dsn)
        assert read(CLEAN)["_source_blob"].n_unique() == read(DAILY)["_source_blob"].n_unique()

    for name, seed in (("a", 30), ("b", 31), ("c", 32)):
        upload(azurite, f"{DATASET}/{name}.csv", sample(tmp_path, 2_000, seed=seed).read_bytes())
    run_host()
    agree()
    upload(azurite, f"{DATASET}/a.csv", sample(tmp_path, 1_500, seed=33).read_bytes())  # a new version
    run_host()
    agree()
    QueueSender().send("ingest-requests", operations.request(f"{DATASET}/b.csv", "replay"))  # a replay
    run_host()
    agree()
    blobs(azurite).get_blob_client("raw", f"{DATASET}/c.csv").delete_blob()
    assert operations.cmd_forget(argparse.Namespace(blob=f"{DATASET}/c.csv", force=False)) == 0  # forgotten
    agree()
    assert f"{DATASET}/c.csv" not in set(read(CLEAN)["_source_blob"])
    assert not [n for n in names(azurite, "curated") if layout.source_key(f"{DATASET}/c.csv") in n and "/tables/" not in n]

    real_fetch = app_load.Loader._fetch

    def refuse_a(self, request, contract, scratch):
        if request["source"]["blob"] == f"{DATASET}/a.csv":
            raise PipelineError("missing_output", "the load of this version fails")
        return real_fetch(self, request, contract, scratch)

    monkeypatch.setattr(app_load.Loader, "_fetch", refuse_a)
    before = read(CLEAN).filter(pl.col("_source_blob") == f"{DATASET}/a.csv")["_run_id"].unique().to_list()
    upload(azurite, f"{DATASET}/a.csv", sample(tmp_path, 1_800, seed=34).read_bytes())  # its load fails
    run_host()
    agree()
    assert read(CLEAN).filter(pl.col("_source_blob") == f"{DATASET}/a.csv")["_run_id"].unique().to_list() == before
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pipeline.ledger WHERE status = 'rejected'").fetchone()[0] == 1


def test_fifty_files_of_one_dataset_published_at_once_appear_each_exactly_once(services, tmp_path):
    """Parallel workers (threads: delta-rs and polars release the GIL) ingest and load 50 files of
    one dataset at the same moment, every lake commit racing the others for the next version."""
    from shared.app import contracts, ingest
    from shared.app.load import Loader
    from shared.postgres.connections import ConnectionCache
    from shared.storage.blobs import BlobStore

    azurite, dsn = services
    files = {f"{DATASET}/burst/{i:02d}.csv": sample(tmp_path, 400, seed=100 + i) for i in range(50)}
    for name, path in files.items():
        upload(azurite, name, path.read_bytes())
    store, known = BlobStore(), contracts.load()
    cache = ConnectionCache()
    loader = Loader(cache.get, store, known)
    loader.prepare(cache.get(), known[DATASET])
    start = threading.Barrier(len(files))

    def one(name: str):
        doc = ingest.ingest(store, name, known)
        start.wait()  # every load, and so every lake commit, at once
        try:
            return loader.load(doc)
        finally:
            cache.discard()

    with ThreadPoolExecutor(len(files)) as pool:
        outcomes = list(pool.map(one, files))

    assert {o.status for o in outcomes} == {"loaded"}
    cost = {k: sum(o.lake_cost.get(k, 0) for o in outcomes) for k in ("commits", "races", "retries", "conflicts")}
    print(f"\n50 files at once: {cost}")  # the figure docs/lake.md reports
    assert cost["commits"] == 2 * len(files) and cost["conflicts"] == 0
    clean = read(CLEAN)
    per_source = clean.group_by("_source_blob").agg(pl.len(), pl.col("_run_id").n_unique()).sort("_source_blob")
    assert per_source.rows() == [(n, oracle.bank(p).valid, 1) for n, p in sorted(files.items())]
    expected = oracle.Expected()
    for path in files.values():
        expected = expected.add(oracle.bank(path))
    assert merged_daily(read(DAILY)) == expected.view_rows() == view_rows(dsn)


def test_the_nightly_upkeep_reconciles_compacts_checkpoints_and_vacuums_under_the_nightly_lock(services, tmp_path):
    from shared.app import contracts, reprocess
    from shared.postgres import connections, locks
    from shared.storage.blobs import BlobStore

    azurite, dsn = services
    for seed in (40, 41, 42):  # three versions of one source: two runs' files removed from the table
        upload(azurite, f"{DATASET}/a.csv", sample(tmp_path, 1_000, seed=seed).read_bytes())
        run_host()
    upload(azurite, f"{DATASET}/b.csv", sample(tmp_path, 1_000, seed=43).read_bytes())
    run_host()
    # the lake falls behind PostgreSQL for b (as if its message had been parked between the two)
    key = layout.source_key(f"{DATASET}/b.csv")
    lake.remove(lake.table_uri(DAILY), lake.storage_options(), source_key=key, version=0, metadata={})
    files_before = names(azurite, "curated", f"{CLEAN}/_source_key=")

    conn, other = connections.connect(), psycopg.connect(dsn)
    with other.transaction():
        assert locks.try_lock(other, locks.NIGHTLY)  # another nightly run holds the lock
        busy = reprocess.maintain_lake(BlobStore(), conn, "pipeline", contracts.load(), retention_hours=0)
    assert busy["skipped_another_run_holds_the_lock"]
    summary = reprocess.maintain_lake(BlobStore(), conn, "pipeline", contracts.load(), retention_hours=0)

    assert summary["reconciled"]["synced"] == 1
    assert merged_daily(read(DAILY)) == view_rows(dsn)
    assert summary["tables"][f"{DATASET}/clean"]["files_vacuumed"] == 2
    assert len(names(azurite, "curated", f"{CLEAN}/_source_key=")) == len(files_before) - 2
    assert names(azurite, "curated", f"{CLEAN}/_delta_log/_last_checkpoint")
    history = lake.history(lake.table_uri(CLEAN), lake.storage_options())
    by_nightly = [h for h in history if h.get("pipeline.run_id") == summary["run_id"]]
    assert {"maintain"} <= {h["pipeline.operation"] for h in by_nightly} <= {"maintain", "retention"}
    assert (
        read(CLEAN).height
        == oracle.bank(tmp_path / "sample-42-1000.csv").valid + oracle.bank(tmp_path / "sample-43-1000.csv").valid
    )
    conn.close()
    other.close()


def test_a_load_whose_lake_files_vanished_fails_before_postgres_changes(services, tmp_path):
    from shared.app import contracts, ingest, triggers
    from shared.storage.blobs import BlobStore

    azurite, dsn = services
    upload(azurite, f"{DATASET}/a.csv", sample(tmp_path, 1_000, seed=44).read_bytes())
    run_host()
    first = view_rows(dsn)
    upload(azurite, f"{DATASET}/a.csv", sample(tmp_path, 1_000, seed=45).read_bytes())
    doc = ingest.ingest(BlobStore(), f"{DATASET}/a.csv", contracts.load())
    for part in doc["outputs"]["clean"]["parts"]:  # lost, as a vacuum would after a very long wait
        blobs(azurite).get_blob_client("curated", doc["outputs"]["clean"]["prefix"] + part).delete_blob()

    outcome = triggers._loader().load(doc)

    assert outcome.status == "failed" and "gone" in outcome.detail
    assert view_rows(dsn) == first == merged_daily(read(DAILY))


def test_the_function_app_starts_without_importing_delta_rs():
    """Cold start: deltalake (a 130 MB wheel, ~100 MB of memory once used) is imported by the
    first publish, never by ``import function_app``."""
    import subprocess
    import sys

    code = "import sys, function_app; print(sorted(m for m in ('deltalake', 'arro3', 'duckdb') if m in sys.modules))"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_taxi_lake_twins_merged_by_key_equal_the_postgres_views_distinct_counts_included(services, tmp_path):
    """Timestamps, decimals, a mean, a min, a max and a distinct count (its side table) through
    the lake: the per-file tables merged as the view merges them give the view's rows."""
    from shared.tools import samples as generate
    from tests.test_taxi import view

    azurite, dsn = services
    for name, seed, rows in (("a", 51, 3_000), ("b", 52, 2_000)):
        path = generate.taxi_trips(tmp_path / f"{name}.csv", rows, seed=seed)
        upload(azurite, f"taxi_trips/{name}.csv", path.read_bytes())
    run_host()

    keys = ["month", "pickup_borough"]
    per_file = read("taxi_trips/tables/taxi_trips_monthly_by_file")
    distinct = read("taxi_trips/tables/taxi_trips_monthly_by_file__vendors")
    assert per_file.schema["first_pickup"] == pl.Datetime("us", "UTC") and per_file["_source_blob"].n_unique() == 2
    merged = per_file.group_by(keys).agg(
        pl.col("trips").sum(),
        pl.col("passengers").sum(),
        pl.col("fare_total").sum(),
        (pl.col("distance_mean__sum").sum().cast(pl.Float64) / pl.col("distance_mean__count").sum()).alias("distance_mean"),
        pl.col("longest_trip").max(),
        pl.col("first_pickup").min(),
    )
    vendors = distinct.drop_nulls("value").group_by(keys).agg(pl.col("value").n_unique().alias("vendors"))
    lake_rows = merged.join(vendors, on=keys, how="left", nulls_equal=True)
    got = {(r["month"], r["pickup_borough"]): r for r in lake_rows.iter_rows(named=True)}
    want = {(r["month"], r["pickup_borough"]): r for r in view(dsn, "taxi_trips_monthly")}
    assert got.keys() == want.keys()
    for key, row in want.items():
        mine = got[key]
        for column in ("trips", "passengers", "fare_total", "longest_trip", "first_pickup"):
            assert mine[column] == row[column], (key, column)
        assert (mine["vendors"] or 0) == (row["vendors"] or 0), key
        assert mine["distance_mean"] == pytest.approx(row["distance_mean"], rel=1e-12), key


def test_a_forget_cut_short_before_the_lake_is_finished_by_the_nightly_reconcile(services, tmp_path):
    from shared.app import contracts, reprocess
    from shared.postgres import connections
    from shared.postgres.replace import remove_source
    from shared.storage.blobs import BlobStore

    azurite, dsn = services
    upload(azurite, f"{DATASET}/a.csv", sample(tmp_path, 1_000, seed=46).read_bytes())
    upload(azurite, f"{DATASET}/b.csv", sample(tmp_path, 1_000, seed=47).read_bytes())
    run_host()
    conn = connections.connect()
    known = contracts.load()
    remove_source(conn, known[DATASET], f"{DATASET}/a.csv", "pipeline")  # PostgreSQL only: then the worker died
    assert merged_daily(read(DAILY)) != view_rows(dsn)

    summary = reprocess.maintain_lake(BlobStore(), conn, "pipeline", known, retention_hours=168)

    assert summary["reconciled"]["synced"] == 1
    assert set(read(CLEAN)["_source_blob"]) == {f"{DATASET}/b.csv"}
    assert merged_daily(read(DAILY)) == view_rows(dsn)
    conn.close()
