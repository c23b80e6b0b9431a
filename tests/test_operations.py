"""Operations: status, replay (blobs and poison queues), backfill and forget, on real services."""

from __future__ import annotations

import json
import os

import psycopg
import pytest

from shared.tools import cli, samples
from tests import oracle
from tests.test_end_to_end import DATASET, blobs, ledger, poison_count, run_host, upload, view_rows


def shared_cli(*args: str) -> int:
    return cli.main(list(args))


def test_status_reports_runs_refusals_poison_and_lag(services, tmp_path, capsys):
    azurite, _dsn = services
    upload(azurite, f"{DATASET}/good.csv", samples.bank_transactions(tmp_path / "g.csv", 500, seed=1).read_bytes())
    upload(azurite, f"{DATASET}/bad.csv", b"")
    run_host()

    assert shared_cli("status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["runs_by_status"] == {"loaded": 1, "rejected": 1}
    assert [(f["status"], f["reason"]) for f in status["failures_by_reason"]] == [("rejected", "empty_file")]
    assert status["lag_seconds"]["count"] == 1 and status["lag_seconds"]["max"] < 120
    assert sum(status["poison"].values()) == 0
    assert shared_cli("status") == 0
    assert "Runs: loaded 1 · rejected 1" in capsys.readouterr().out


def test_a_poisoned_load_is_replayed_after_its_cause_is_fixed_and_loads_once(services, tmp_path, capsys):
    azurite, dsn = services
    path = samples.bank_transactions(tmp_path / "p.csv", 2_000, seed=2)
    upload(azurite, f"{DATASET}/p.csv", path.read_bytes())
    # the database is unreachable: every delivery fails, then the message is parked
    os.environ["POSTGRES_DSN"] = psycopg.conninfo.make_conninfo(dsn, port="1", connect_timeout="1")
    from shared.app import triggers

    triggers.reset()
    stats = run_host()
    assert stats.poisoned == 1 and poison_count(azurite) == 1

    os.environ["POSTGRES_DSN"] = dsn  # the cause is fixed
    triggers.reset()
    assert shared_cli("status") == 1  # a parked message makes status exit non-zero
    assert "load-requests-poison 1" in capsys.readouterr().out
    assert shared_cli("replay", "--poison", "load") == 0
    run_host()

    assert poison_count(azurite) == 0
    assert view_rows(dsn) == oracle.bank(path).view_rows()
    [row] = ledger(dsn)
    assert row["status"] == "loaded"
    run_host()  # nothing left: loaded once
    assert view_rows(dsn) == oracle.bank(path).view_rows()


def test_replaying_a_blob_rebuilds_its_contribution(services, tmp_path):
    azurite, dsn = services
    path = samples.bank_transactions(tmp_path / "r.csv", 1_000, seed=3)
    upload(azurite, f"{DATASET}/r.csv", path.read_bytes())
    run_host()
    with psycopg.connect(dsn) as conn:  # someone damaged the table
        conn.execute("DELETE FROM analytics.bank_transactions_daily_by_file WHERE domain = 'RETAIL'")
    assert view_rows(dsn) != oracle.bank(path).view_rows()

    assert shared_cli("replay", "--blob", f"{DATASET}/r.csv") == 0
    run_host()

    assert view_rows(dsn) == oracle.bank(path).view_rows()


def test_backfill_processes_every_blob_under_a_prefix_with_limited_concurrency(services, tmp_path, capsys):
    azurite, dsn = services
    expected = oracle.Expected()
    for i in range(5):
        path = samples.bank_transactions(tmp_path / f"b{i}.csv", 800, seed=10 + i)
        upload(azurite, f"{DATASET}/history/{i}.csv", path.read_bytes())
        expected = expected.add(oracle.bank(path))
    upload(azurite, f"{DATASET}/elsewhere.csv", b"")  # not under the prefix

    assert shared_cli("backfill", "--prefix", f"{DATASET}/history/", "--concurrency", "2") == 0

    assert "loaded 5" in capsys.readouterr().out
    assert view_rows(dsn) == expected.view_rows()
    assert {r["source_blob"] for r in ledger(dsn)} == {f"{DATASET}/history/{i}.csv" for i in range(5)}


def test_forget_removes_a_deleted_blobs_contribution_only_when_asked(services, tmp_path, capsys):
    azurite, dsn = services
    a = samples.bank_transactions(tmp_path / "a.csv", 700, seed=20)
    b = samples.bank_transactions(tmp_path / "b.csv", 700, seed=21)
    upload(azurite, f"{DATASET}/a.csv", a.read_bytes())
    upload(azurite, f"{DATASET}/b.csv", b.read_bytes())
    run_host()

    assert shared_cli("forget", f"{DATASET}/a.csv") == 2  # still in raw: refused
    blobs(azurite).get_blob_client("raw", f"{DATASET}/a.csv").delete_blob()
    run_host(fire="reprocess")  # the nightly job reports it, and removes nothing
    assert view_rows(dsn) == oracle.bank(a).add(oracle.bank(b)).view_rows()

    assert shared_cli("forget", f"{DATASET}/a.csv") == 0
    assert view_rows(dsn) == oracle.bank(b).view_rows()
    assert {r["source_blob"]: r["status"] for r in ledger(dsn)} == {f"{DATASET}/a.csv": "removed", f"{DATASET}/b.csv": "loaded"}


@pytest.mark.parametrize("dsn", ["host=db user=app password=s3cr3t dbname=x", "postgresql://app:s3cr3t@db:5432/x"])
def test_no_password_reaches_a_log_line(dsn, capsys):
    import logging

    from shared.app import logs

    logs.configure(level="INFO", json_lines=True)
    logging.getLogger("pipeline.test").info("connecting with %s", dsn)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert "s3cr3t" not in line["message"] and "***" in line["message"]
