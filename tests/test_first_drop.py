"""A user's own feed on a fresh account, the first time: through the real runner, Azurite and PostgreSQL.

A fresh account has what the user made by hand (``raw``, or nothing at all); the contracts
folder gains a contract while the app runs; a feed's repeated lines may be real rows. Each
test ends with the file loaded, every row accounted for and nothing parked in a poison queue.
"""

from __future__ import annotations

import csv
import io
import shutil
import threading
import time
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

import function_app
from shared.app import contracts as app_contracts
from shared.core.contract import ContractError
from shared.tools.runner import LocalHost

ROOT = Path(__file__).resolve().parent.parent

TRANSFERS = """
[dataset]
name = "equipment_transfers"
version = 1

[dedup]
mode = "none"               # one item per line: identical lines are items of their own

[[columns]]
name = "item"
type = "string"

[[columns]]
name = "to_site"
type = "string"

[[columns]]
name = "value"
type = "decimal"
scale = 2

[[aggregates]]
name = "transfers_by_item"
group_by = ["item", "to_site"]
metrics = [
  { name = "items", op = "count" },
  { name = "total_value", op = "sum", column = "value" },
]
"""

TRANSFER_ROWS = [("Laptop", "Leeds", "1250.00")] * 5 + [("Laptop", "York", "1250.00")] * 2 + [("Desk", "Leeds", "310.50")] * 3
TRANSFER_ROWS += [("Chair", "York", "75.25")]


def transfers_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Item", "To_Site", "Value"])
    writer.writerows(TRANSFER_ROWS)
    return out.getvalue().encode()


def contracts_folder(tmp_path: Path, *extra: tuple[str, str]) -> Path:
    folder = tmp_path / "contracts"
    folder.mkdir(exist_ok=True)
    shutil.copy(ROOT / "contracts" / "bank_transactions.toml", folder)
    for name, text in extra:
        (folder / name).write_text(text)
    return folder


def host() -> LocalHost:
    return LocalHost(function_app.app, workers=2, poll_seconds=0.05, queue_overrides={"visibilityTimeout": "00:00:01"})


def poison_messages(azurite) -> dict[str, int]:
    queues = QueueServiceClient.from_connection_string(azurite.connection_string)
    return {
        q.name: queues.get_queue_client(q.name).get_queue_properties().approximate_message_count or 0
        for q in queues.list_queues()
        if q.name.endswith("-poison")
    }


def ledger_rows(dsn: str, blob: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('pipeline.ledger')").fetchone()[0] is None:
            return []  # the loader has not created it yet
        return conn.execute(
            "SELECT status, error_code, rows_read, rows_valid, rows_rejected, rows_duplicate FROM pipeline.ledger"
            " WHERE source_blob = %s",
            (blob,),
        ).fetchall()


def bank_csv(rows: int = 200) -> bytes:
    lines = ["Date,Domain,Location,Value,Transaction_count"]
    lines += [f"1/{1 + i % 28}/2022,RETAIL,Goa,{100 + i},{1 + i % 5}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


# --- fresh accounts ------------------------------------------------------------------------------


@pytest.mark.parametrize("made_by_hand", [("raw",), ()], ids=["only raw", "nothing at all"])
def test_a_fresh_account_loads_its_first_drop_with_nothing_parked(services, made_by_hand):
    azurite, dsn = services
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    runner = host()
    for name in made_by_hand:
        blobs.create_container(name)
    runner.prepare()  # the host makes its trigger's container (raw) and queues, nothing else
    assert not blobs.get_container_client("curated").exists()
    blobs.get_blob_client("raw", "bank_transactions/first.csv").upload_blob(bank_csv())

    stats = runner.run(until_idle=True, timeout=120)

    assert stats.failures == 0 and stats.poisoned == 0
    assert ledger_rows(dsn, "bank_transactions/first.csv") == [("loaded", None, 200, 200, 0, 0)]
    assert sum(poison_messages(azurite).values()) == 0
    assert blobs.get_container_client("curated").exists() and blobs.get_container_client("quarantine").exists()


def test_listing_a_container_that_does_not_exist_finds_nothing(storage_clean):
    from shared.storage.blobs import BlobStore

    assert list(BlobStore().list("raw")) == []


# --- de-duplication is the contract's choice -----------------------------------------------------


def test_a_feed_of_legitimately_repeated_lines_under_mode_none_keeps_every_row(services, tmp_path, monkeypatch):
    azurite, dsn = services
    monkeypatch.setenv("PIPELINE_CONTRACTS_DIR", str(contracts_folder(tmp_path, ("equipment_transfers.toml", TRANSFERS))))
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    runner = host()
    runner.prepare()
    blobs.get_blob_client("raw", "equipment_transfers/2024-05.csv").upload_blob(transfers_csv())

    assert runner.run(until_idle=True, timeout=120).failures == 0

    n = len(TRANSFER_ROWS)
    assert ledger_rows(dsn, "equipment_transfers/2024-05.csv") == [("loaded", None, n, n, 0, 0)]
    with psycopg.connect(dsn) as conn:
        got = conn.execute("SELECT sum(items), sum(total_value) FROM analytics.transfers_by_item").fetchone()
    assert got == (n, sum(Decimal(v) for _, _, v in TRANSFER_ROWS))


# --- contracts have a lifecycle ----------------------------------------------------------------------


def test_a_missing_or_empty_contracts_folder_stops_start_up_with_one_line(tmp_path):
    with pytest.raises(ContractError, match="no such folder"):
        app_contracts.Registry(lambda: tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ContractError, match="holds no"):
        app_contracts.Registry(lambda: tmp_path / "empty")


def test_a_second_contract_for_one_dataset_stops_start_up_naming_both_files(tmp_path):
    folder = contracts_folder(tmp_path)
    shutil.copy(folder / "bank_transactions.toml", folder / "bank_transactions-draft.toml")
    with pytest.raises(ContractError) as refused:
        app_contracts.Registry(lambda: folder)
    assert "bank_transactions-draft.toml" in str(refused.value) and "bank_transactions.toml" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_contract_that_breaks_while_the_app_runs_leaves_the_last_good_ones_in_use(tmp_path, caplog):
    folder = contracts_folder(tmp_path)
    registry = app_contracts.Registry(lambda: folder)
    (folder / "equipment_transfers.toml").write_text(TRANSFERS.replace('mode = "none"', 'mode = "sometimes"'))
    assert set(registry) == {"bank_transactions"}
    assert "contracts not reloaded" in caplog.text and "sometimes" in caplog.text
    (folder / "equipment_transfers.toml").write_text(TRANSFERS)
    assert set(registry) == {"bank_transactions", "equipment_transfers"}


def test_a_contract_added_while_the_runner_runs_is_used_for_the_next_file(services, tmp_path, monkeypatch):
    azurite, dsn = services
    folder = contracts_folder(tmp_path)
    monkeypatch.setenv("PIPELINE_CONTRACTS_DIR", str(folder))
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    runner = host()
    runner.prepare()
    running = threading.Thread(target=runner.run, kwargs={"until_idle": False, "timeout": 120})
    running.start()
    try:
        (folder / "equipment_transfers.toml").write_text(TRANSFERS)
        blobs.get_blob_client("raw", "equipment_transfers/new.csv").upload_blob(transfers_csv())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ledger_rows(dsn, "equipment_transfers/new.csv"):
            time.sleep(0.2)
    finally:
        runner.stop()
        running.join()
    n = len(TRANSFER_ROWS)
    assert ledger_rows(dsn, "equipment_transfers/new.csv") == [("loaded", None, n, n, 0, 0)]


def test_a_file_refused_for_want_of_a_contract_loads_when_the_nightly_job_runs_after_it_appears(services, tmp_path, monkeypatch):
    azurite, dsn = services
    folder = contracts_folder(tmp_path)
    monkeypatch.setenv("PIPELINE_CONTRACTS_DIR", str(folder))
    monkeypatch.setenv("REPROCESS_GRACE_MINUTES", "0")
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    runner = host()
    runner.prepare()
    blobs.get_blob_client("raw", "equipment_transfers/early.csv").upload_blob(transfers_csv())
    runner.run(until_idle=True, timeout=120)
    assert ledger_rows(dsn, "equipment_transfers/early.csv") == [("rejected", "unknown_dataset", 0, 0, 0, 0)]

    (folder / "equipment_transfers.toml").write_text(TRANSFERS)
    assert runner.fire("reprocess")
    runner.run(until_idle=True, timeout=120)

    n = len(TRANSFER_ROWS)
    assert ledger_rows(dsn, "equipment_transfers/early.csv") == [("loaded", None, n, n, 0, 0)]
    assert sum(poison_messages(azurite).values()) == 0
