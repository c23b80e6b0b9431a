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


# --- arguments that name nothing are refused ------------------------------------------------------


def ingest_requests(azurite) -> list[dict]:
    """The ingest requests waiting in the queue (peeked, decoded)."""
    import base64

    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueServiceClient

    queue = QueueServiceClient.from_connection_string(azurite.connection_string).get_queue_client("ingest-requests")
    try:
        return [json.loads(base64.b64decode(m.content)) for m in queue.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_replay_of_a_blob_that_is_not_in_raw_is_refused_and_nothing_is_queued(services, tmp_path, capsys):
    azurite, _ = services
    upload(azurite, f"{DATASET}/real.csv", samples.bank_transactions(tmp_path / "r.csv", 100, seed=4).read_bytes())
    assert shared_cli("replay", "--blob", f"{DATASET}/typo.csv") == 2
    line = one_line(capsys.readouterr().err)
    assert f"raw/{DATASET}/typo.csv does not exist" in line
    assert ingest_requests(azurite) == []


def test_replay_of_a_dataset_without_a_contract_is_refused(services, capsys):
    assert shared_cli("replay", "--dataset", "nosuch") == 2
    assert "no contract for dataset 'nosuch'" in one_line(capsys.readouterr().err)


def test_replay_of_a_poison_message_id_that_matches_nothing_is_refused_and_moves_nothing(services, capsys):
    azurite, _ = services
    from azure.storage.queue import QueueServiceClient

    poison = QueueServiceClient.from_connection_string(azurite.connection_string).create_queue("load-requests-poison")
    poison.send_message("eyJzb3VyY2UiOiB7ImJsb2IiOiAiYi5jc3YifX0=")  # {"source": {"blob": "b.csv"}}
    assert shared_cli("replay", "--poison", "load", "--id", "123") == 2
    assert "no message 123 in load-requests-poison" in one_line(capsys.readouterr().err)
    assert poison.get_queue_properties().approximate_message_count == 1
    assert len(list(poison.peek_messages())) == 1  # still visible: nothing was taken and hidden


def test_forget_of_a_blob_that_has_no_loaded_rows_is_refused(services, capsys):
    assert shared_cli("forget", f"{DATASET}/never-loaded.csv") == 2
    line = one_line(capsys.readouterr().err)
    assert "has no loaded rows in PostgreSQL" in line and "never seen" in line


def test_replay_options_that_mean_nothing_alone_are_refused(services, capsys):
    assert shared_cli("replay", "--blob", f"{DATASET}/a.csv", "--id", "1") == 2
    assert "--id goes with --poison" in one_line(capsys.readouterr().err)
    assert shared_cli("replay", "--failed", "--reason", "x") == 2
    assert shared_cli("replay", "--status", "rejected", "--reason", "unknown_datset") == 2
    assert "not a refusal code" in one_line(capsys.readouterr().err.splitlines()[-1])


def test_every_command_that_takes_a_blob_name_accepts_a_raw_prefix(services, tmp_path, capsys):
    azurite, _ = services
    upload(azurite, f"{DATASET}/a.csv", samples.bank_transactions(tmp_path / "a.csv", 300, seed=2).read_bytes())
    run_host()
    assert shared_cli("replay", "--blob", f"raw/{DATASET}/a.csv", "--dry-run") == 0
    assert shared_cli("report", f"raw/{DATASET}/a.csv") == 0
    assert shared_cli("backfill", "--prefix", f"raw/{DATASET}/", "--queue") == 0
    blobs(azurite).get_blob_client("raw", f"{DATASET}/a.csv").delete_blob()
    assert shared_cli("forget", f"raw/{DATASET}/a.csv") == 0
    assert f"row(s) of {DATASET}/a.csv" in capsys.readouterr().out


# --- replay selects refused and failed files --------------------------------------------------------


def test_replay_selects_the_files_refused_unknown_dataset_and_lists_what_it_sends(services, tmp_path, capsys):
    azurite, _ = services
    data = samples.bank_transactions(tmp_path / "n.csv", 100, seed=5).read_bytes()
    upload(azurite, "newfeed/one.csv", data)
    upload(azurite, f"{DATASET}/empty.csv", b"")  # refused too, for another reason
    run_host()

    assert shared_cli("replay", "--status", "rejected", "--reason", "unknown_dataset", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would replay raw/newfeed/one.csv (rejected: unknown_dataset)" in out and "empty.csv" not in out
    assert ingest_requests(azurite) == []  # a dry run sends nothing

    assert shared_cli("replay", "--status", "rejected", "--reason", "unknown_dataset") == 0
    assert "1 blob(s) queued on ingest-requests" in capsys.readouterr().out
    assert [(r["blob"], r["force"]) for r in ingest_requests(azurite)] == [("newfeed/one.csv", True)]


def test_replay_status_failed_is_what_replay_failed_was(services, capsys):
    assert shared_cli("replay", "--status", "failed", "--dry-run") == 0
    assert "nothing to replay" in capsys.readouterr().out
    assert shared_cli("replay", "--failed", "--dry-run") == 0


# --- status, in words, and its exit code --------------------------------------------------------------


def test_status_calls_a_parked_load_parked_not_missed_and_prints_no_python_reprs(services, tmp_path, capsys):
    import base64

    from azure.storage.queue import QueueServiceClient

    azurite, _ = services
    upload(azurite, f"{DATASET}/parked.csv", samples.bank_transactions(tmp_path / "p.csv", 100, seed=6).read_bytes())
    body = json.dumps({"source": {"container": "raw", "blob": f"{DATASET}/parked.csv"}, "run_id": "r1"})
    queues = QueueServiceClient.from_connection_string(azurite.connection_string)
    queues.create_queue("load-requests-poison").send_message(base64.b64encode(body.encode()).decode())

    assert shared_cli("status") == 1
    out = capsys.readouterr().out
    assert "parked in a poison queue after every delivery failed" in out and "replay --poison" in out
    assert "missed" not in out and "no run yet" not in out
    assert "{'" not in out and "{}" not in out
    assert "Needs a person:\n  - 1 message(s) parked in poison queues" in out


def test_status_needs_a_person_for_a_file_refused_unknown_dataset_but_not_for_an_empty_one(services, tmp_path, capsys):
    azurite, _ = services
    upload(azurite, f"{DATASET}/empty.csv", b"")
    run_host()
    assert shared_cli("status") == 0  # a file refused for its content is an outcome, not an alarm
    assert "Needs a person: nothing" in capsys.readouterr().out

    upload(azurite, "newfeed/one.csv", b"a,b\n1,2\n")
    run_host()
    assert shared_cli("status", "--json") == 1
    status = json.loads(capsys.readouterr().out)
    [line] = status["needs_a_person"]
    assert "refused unknown_dataset, e.g. newfeed/one.csv" in line and "--reason unknown_dataset" in line


def test_status_needs_a_person_for_a_blob_loaded_then_deleted_from_raw(services, tmp_path, capsys):
    azurite, _ = services
    upload(azurite, f"{DATASET}/gone.csv", samples.bank_transactions(tmp_path / "g.csv", 100, seed=7).read_bytes())
    run_host()
    blobs(azurite).get_blob_client("raw", f"{DATASET}/gone.csv").delete_blob()
    assert shared_cli("status") == 1
    assert f"loaded, then deleted from raw, e.g. {DATASET}/gone.csv" in capsys.readouterr().out


# --- the waits said out loud ---------------------------------------------------------------------------


def test_fire_reprocess_says_how_many_young_blobs_it_left_to_their_own_event(services, tmp_path, capsys):
    azurite, _ = services
    upload(azurite, f"{DATASET}/fresh.csv", samples.bank_transactions(tmp_path / "f.csv", 100, seed=8).read_bytes())
    assert shared_cli("run", "--once", "--fire", "reprocess") == 0
    out = capsys.readouterr().out
    assert "1 blob(s) younger than 30 min left to their own event (REPROCESS_GRACE_MINUTES)" in out
    assert {r["source_blob"]: r["status"] for r in ledger(_dsn(services))} == {f"{DATASET}/fresh.csv": "loaded"}


def _dsn(services) -> str:
    return services[1]


def test_run_once_says_what_it_waits_for_when_a_stopped_runner_holds_a_message(services, monkeypatch, capsys):
    import base64

    from azure.storage.queue import QueueServiceClient

    azurite, _ = services
    queue = QueueServiceClient.from_connection_string(azurite.connection_string).create_queue("ingest-requests")
    queue.send_message(base64.b64encode(json.dumps({"container": "raw", "blob": f"{DATASET}/gone.csv"}).encode()).decode())
    list(queue.receive_messages(visibility_timeout=5))  # a runner took it, then was killed: hidden for its lease
    monkeypatch.setenv("PIPELINE_RUNNER_LEASE_SECONDS", "5")

    assert shared_cli("run", "--once") == 0
    out = capsys.readouterr().out
    assert "waiting for message(s) not visible yet (1 on ingest-requests" in out
    assert "up to 5 s, PIPELINE_RUNNER_LEASE_SECONDS" in out and "visibilityTimeout (30 s)" in out
    assert "ingest_request: ingest-requests #2 done" in out  # and then it came back and ran


# --- logs ------------------------------------------------------------------------------------------------


def test_the_runner_logs_at_info_by_default(services, tmp_path, monkeypatch, capsys):
    azurite, _ = services
    monkeypatch.delenv("PIPELINE_LOG_LEVEL", raising=False)
    upload(azurite, f"{DATASET}/a.csv", samples.bank_transactions(tmp_path / "a.csv", 100, seed=9).read_bytes())
    assert shared_cli("run", "--once") == 0
    err = capsys.readouterr().err
    assert f"INFO pipeline.ingest: ingested {DATASET}/a.csv" in err and f"INFO pipeline.load: load {DATASET}/a.csv: loaded" in err


def test_json_log_format_puts_the_runners_own_lines_in_json_too(services, tmp_path, monkeypatch, capsys):
    azurite, _ = services
    monkeypatch.setenv("PIPELINE_LOG_FORMAT", "json")
    upload(azurite, f"{DATASET}/a.csv", samples.bank_transactions(tmp_path / "a.csv", 100, seed=9).read_bytes())
    assert shared_cli("run", "--once") == 0
    out, err = capsys.readouterr()
    assert out == ""
    records = [json.loads(line) for line in err.splitlines()]
    runner = [r["message"] for r in records if r["logger"] == "pipeline.runner"]
    assert any(m.startswith("ingest: raw/") and " done in " in m for m in runner)
    assert any(m.endswith("sent to poison queues") for m in runner)
    assert any(r["logger"] == "pipeline.load" and r.get("status") == "loaded" for r in records)


def test_the_function_app_logs_at_info_by_default():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_LOG")}
    code = "import logging, function_app; print(logging.getLogger('pipeline.ingest').getEffectiveLevel())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == str(logging_info())


def logging_info() -> int:
    import logging

    return logging.INFO


def test_a_blob_name_holding_a_line_end_cannot_forge_a_line_of_status(services, capsys):
    azurite, _ = services
    forged = f"{DATASET}/x.csv\nINFO pipeline.load: {DATASET}/y.csv loaded.csv"
    upload(azurite, forged, b"Date,Domain,Location,Value,Transaction_count\n1/1/2022,RETAIL,Goa,5,1\n")
    run_host()
    shared_cli("status")
    out = capsys.readouterr().out
    assert not any(line.startswith("INFO") for line in out.splitlines())
    assert f"{DATASET}/x.csv\\nINFO pipeline.load:" in out


def test_a_run_with_a_high_share_of_duplicates_is_flagged_on_its_status_line(services, capsys):
    azurite, _ = services
    row = b"1/1/2022,RETAIL,Goa,5,1\n"
    upload(azurite, f"{DATASET}/repeats.csv", b"Date,Domain,Location,Value,Transaction_count\n" + row * 10)
    run_host()
    shared_cli("status")
    [line] = [x for x in capsys.readouterr().out.splitlines() if "repeats.csv" in x and "read 10" in x]
    assert "WARNING: 90% duplicates, check [dedup] mode" in line
