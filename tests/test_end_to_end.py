"""End to end through a real Azurite and a real PostgreSQL, driven by the local runner.

Every test drops files into ``raw``, runs the app's registered functions until idle and
compares the Parquet outputs and the PostgreSQL view with an independent recomputation.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import polars as pl
import psycopg
import pytest
from azure.storage.blob import BlobServiceClient

import function_app
from shared.tools import samples
from shared.tools.runner import LocalHost
from tests import oracle

DATASET = "bank_transactions"


def run_host(fire: str | None = None):
    host = LocalHost(function_app.app, workers=2, poll_seconds=0.05, queue_overrides={"visibilityTimeout": "00:00:01"})
    if fire:
        assert host.fire(fire)
    return host.run(until_idle=True, timeout=180)


def blobs(azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def upload(azurite, name: str, data: bytes) -> None:
    service = blobs(azurite)
    for container in ("raw", "curated", "quarantine"):
        if not service.get_container_client(container).exists():
            service.create_container(container)
    service.get_blob_client("raw", name).upload_blob(data, overwrite=True)


def names(azurite, container: str, prefix: str = "") -> list[str]:
    client = blobs(azurite).get_container_client(container)
    return sorted(b.name for b in client.list_blobs(name_starts_with=prefix)) if client.exists() else []


def read_parquet(azurite, container: str, name: str) -> pl.DataFrame:
    data = blobs(azurite).get_blob_client(container, name).download_blob().readall()
    return pl.read_parquet(io.BytesIO(data))


def read_clean(azurite, manifest: dict) -> pl.DataFrame:
    """A run's clean rows: every part file the manifest lists."""
    ref = manifest["outputs"]["clean"]
    assert ref["name"] == ref["prefix"] + ref["parts"][0]  # a reader of one file gets the first part
    return pl.concat([read_parquet(azurite, ref["container"], ref["prefix"] + part) for part in ref["parts"]])


def view_rows(dsn: str) -> set[tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT txn_date, domain, location, total_value, transaction_count, record_count"
            " FROM analytics.bank_transactions_daily"
        ).fetchall()
    assert len(rows) == len(set(rows)), "the view has duplicate keys"
    return set(rows)


def ledger(dsn: str) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute("SELECT * FROM pipeline.ledger ORDER BY source_blob, updated_at")
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def sample(tmp_path: Path, rows: int, seed: int) -> Path:
    return samples.bank_transactions(tmp_path / f"sample-{seed}-{rows}.csv", rows, seed=seed, dirty=0.02, duplicates=0.03)


def poison_count(azurite) -> int:
    from azure.storage.queue import QueueServiceClient

    queues = QueueServiceClient.from_connection_string(azurite.connection_string)
    total = 0
    for q in queues.list_queues():
        if q.name.endswith("-poison"):
            total += queues.get_queue_client(q.name).get_queue_properties().approximate_message_count
    return total


def test_a_dropped_csv_becomes_curated_parquet_and_postgres_aggregates(services, tmp_path):
    azurite, dsn = services
    path = sample(tmp_path, 20_000, seed=1)
    expected = oracle.bank(path)
    upload(azurite, f"{DATASET}/2024/day-1.csv", path.read_bytes())

    stats = run_host()

    assert stats.failures == 0
    [manifest_name] = names(azurite, "curated", f"{DATASET}/manifests/")
    manifest = json.loads(blobs(azurite).get_blob_client("curated", manifest_name).download_blob().readall())
    counts = manifest["counts"]
    assert (counts["rows_read"], counts["rows_valid"], counts["rows_rejected"], counts["rows_duplicate"]) == (
        expected.read,
        expected.valid,
        expected.rejected,
        expected.duplicate,
    )
    assert counts["rows_read"] == counts["rows_valid"] + counts["rows_rejected"] + counts["rows_duplicate"]
    reasons = {(r["reason"], r["column"]): r["rows"] for r in manifest["quality"]["rejects_by_reason"]}
    assert reasons == expected.reasons

    clean = read_clean(azurite, manifest)
    assert clean.height == expected.valid
    assert clean.select(pl.struct(pl.exclude("_line", "_source_blob", "_run_id")).is_duplicated().any()).item() is False
    assert set(clean["_source_blob"].unique()) == {f"{DATASET}/2024/day-1.csv"}
    rejects = read_parquet(azurite, "quarantine", manifest["outputs"]["rejects"]["name"])
    assert rejects.height == expected.rejected
    assert rejects["reason"].null_count() == 0 and rejects["line"].min() >= 2

    agg = read_parquet(azurite, "curated", manifest["outputs"]["aggregates"]["daily"]["name"])
    got = {
        (r["txn_date"], r["domain"], r["location"], Decimal(r["total_value"]), Decimal(r["transaction_count"]), r["record_count"])
        for r in agg.iter_rows(named=True)
    }
    assert got == expected.view_rows()
    assert view_rows(dsn) == expected.view_rows()
    [row] = ledger(dsn)
    assert row["status"] == "loaded" and row["rows_valid"] == expected.valid and row["contract_version"] == 1


def test_two_files_covering_the_same_keys_add_up(services, tmp_path):
    azurite, dsn = services
    a, b = sample(tmp_path, 8_000, seed=2), sample(tmp_path, 8_000, seed=3)
    upload(azurite, f"{DATASET}/a.csv", a.read_bytes())
    upload(azurite, f"{DATASET}/b.csv", b.read_bytes())

    run_host()

    both = oracle.bank(a).add(oracle.bank(b))
    shared_keys = set(oracle.bank(a).daily) & set(oracle.bank(b).daily)
    assert shared_keys, "the samples should overlap so that adding up is tested"
    assert view_rows(dsn) == both.view_rows()


def test_the_same_file_twice_never_counts_twice(services, tmp_path):
    azurite, dsn = services
    path = sample(tmp_path, 6_000, seed=4)
    upload(azurite, f"{DATASET}/same.csv", path.read_bytes())
    run_host()
    first = view_rows(dsn)

    # the same bytes dropped again (a new ETag): re-ingested, and it replaces itself
    upload(azurite, f"{DATASET}/same.csv", path.read_bytes())
    run_host()
    assert view_rows(dsn) == first == oracle.bank(path).view_rows()

    # the load request delivered again (at-least-once delivery): recognised, nothing changes
    manifest_name = names(azurite, "curated", f"{DATASET}/manifests/")[-1]
    body = blobs(azurite).get_blob_client("curated", manifest_name).download_blob().readall().decode()
    from shared.core import documents
    from shared.storage.queues import QueueSender

    QueueSender().send("load-requests", documents.load_request(json.loads(body)))
    run_host()
    assert view_rows(dsn) == first
    statuses = sorted(r["status"] for r in ledger(dsn))
    # one row per blob version (two uploads); only the one in the tables says loaded
    assert statuses == ["loaded", "superseded"]


def test_reloading_a_file_replaces_exactly_its_own_contribution(services, tmp_path):
    azurite, dsn = services
    a, b, a2 = sample(tmp_path, 5_000, seed=5), sample(tmp_path, 5_000, seed=6), sample(tmp_path, 3_000, seed=7)
    upload(azurite, f"{DATASET}/a.csv", a.read_bytes())
    upload(azurite, f"{DATASET}/b.csv", b.read_bytes())
    run_host()
    upload(azurite, f"{DATASET}/a.csv", a2.read_bytes())  # a corrected version of a.csv
    run_host()

    assert view_rows(dsn) == oracle.bank(a2).add(oracle.bank(b)).view_rows()
    # the lake's clean table holds one run per source, the current one; the replaced run's rows are gone
    from shared.storage import lake

    clean = pl.read_delta(lake.table_uri(f"{DATASET}/tables/clean"), storage_options=lake.storage_options())
    runs = clean.group_by("_source_blob").agg(pl.col("_run_id").n_unique()).sort("_source_blob").rows()
    assert runs == [(f"{DATASET}/a.csv", 1), (f"{DATASET}/b.csv", 1)]
    assert clean.height == oracle.bank(a2).valid + oracle.bank(b).valid


GOOD_HEADER = b"Date,Domain,Location,Value,Transaction_count\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.mark.parametrize(
    ("blob", "data", "code"),
    [
        (f"{DATASET}/empty.csv", b"", "empty_file"),
        (f"{DATASET}/no-value.csv", b"Date,Domain,Location,Transaction_count\n1/1/2022,RETAIL,Goa,3\n", "missing_columns"),
        (f"{DATASET}/picture.csv", PNG, "not_csv"),
        ("loose-file.csv", GOOD_HEADER + b"1/1/2022,RETAIL,Goa,5,1\n", "unknown_dataset"),
        ("no_such_dataset/file.csv", GOOD_HEADER + b"1/1/2022,RETAIL,Goa,5,1\n", "unknown_dataset"),
    ],
)
def test_a_bad_file_is_quarantined_recorded_and_never_retried(services, blob, data, code):
    azurite, dsn = services
    upload(azurite, blob, data)

    stats = run_host()

    assert stats.failures == 0 and poison_count(azurite) == 0
    quarantined = names(azurite, "quarantine")
    reports = [n for n in quarantined if n.endswith("error.json")]
    assert len(reports) == 1 and len(quarantined) == 2  # the file itself and its error report
    report = json.loads(blobs(azurite).get_blob_client("quarantine", reports[0]).download_blob().readall())
    assert report["status"] == "rejected" and report["error"]["code"] == code
    copy = next(n for n in quarantined if n != reports[0])
    assert blobs(azurite).get_blob_client("quarantine", copy).download_blob().readall() == data
    [row] = ledger(dsn)
    assert (row["source_blob"], row["status"], row["error_code"]) == (blob, "rejected", code)


def test_a_header_only_file_is_a_successful_run_with_zero_rows(services):
    azurite, dsn = services
    upload(azurite, f"{DATASET}/header-only.csv", GOOD_HEADER)

    run_host()

    [row] = ledger(dsn)
    assert (row["status"], row["rows_read"], row["rows_valid"]) == ("loaded", 0, 0)
    assert view_rows(dsn) == set()


def test_the_nightly_job_redrives_a_blob_whose_event_was_missed(services, tmp_path, monkeypatch):
    azurite, dsn = services
    monkeypatch.setenv("REPROCESS_GRACE_MINUTES", "0")
    path = sample(tmp_path, 3_000, seed=8)
    upload(azurite, f"{DATASET}/missed.csv", path.read_bytes())
    # the host's receipt says the blob was seen, but nothing ran: a lost event
    props = blobs(azurite).get_blob_client("raw", f"{DATASET}/missed.csv").get_blob_properties()
    service = blobs(azurite)
    if not service.get_container_client("azure-webjobs-hosts").exists():
        service.create_container("azure-webjobs-hosts")
    etag = props.etag.strip('"')
    from shared.tools.runner import receipt_name

    service.get_blob_client("azure-webjobs-hosts", receipt_name("ingest", f"{DATASET}/missed.csv", etag)).upload_blob(b"")
    run_host()
    assert not _ledger_exists(dsn) or ledger(dsn) == []  # nothing ran

    run_host(fire="reprocess")

    assert view_rows(dsn) == oracle.bank(path).view_rows()
    [row] = ledger(dsn)
    assert row["status"] == "loaded" and row["requeues"] == 1

    run_host(fire="reprocess")  # nothing left to do: no second run
    [row] = ledger(dsn)
    assert row["requeues"] == 1


def _ledger_exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regclass('pipeline.ledger') IS NOT NULL").fetchone()[0]
