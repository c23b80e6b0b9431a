"""Names from outside never become paths, SQL or shell: odd blob names are handled safely."""

from __future__ import annotations

import re

import pytest

from shared.core import layout
from shared.core.contract import IDENTIFIER
from shared.core.redaction import printable, redact
from shared.storage.blobs import FolderStore
from tests.test_end_to_end import DATASET, ledger, names, run_host, upload

ODD_NAMES = [
    f"{DATASET}/../../etc/passwd.csv",
    f"{DATASET}/ğüş 🙂 ünïcödé.csv",
    f"{DATASET}/" + "x" * 900 + ".csv",
    f"{DATASET}/a/b/c/'; DROP TABLE pipeline.ledger; --.csv",
    f"{DATASET}/\u202e.vsc.csv",  # right-to-left override
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_output_names_are_safe_readable_and_unique(name):
    key = layout.source_key(name)
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,93}", key), key
    assert ".." not in key and "/" not in key
    assert layout.source_key(name) == key  # stable
    assert all(layout.source_key(other) != key for other in ODD_NAMES if other != name)
    paths = layout.run_paths(name, "20260101T000000000Z-abcd", DATASET)
    for _container, blob in (paths.clean, paths.manifest, paths.rejects, paths.quarantined_copy(name)):
        assert ".." not in blob.split("/") and len(blob) < 300


def test_dataset_names_are_strict_identifiers():
    assert layout.dataset_of("bank_transactions/x.csv") == "bank_transactions"
    for bad in ("Bank/x.csv", "bank-transactions/x.csv", "../x.csv", "a;drop/x.csv", "x.csv", "é/x.csv"):
        assert layout.dataset_of(bad) is None
    assert IDENTIFIER.match("a" * 63) and not IDENTIFIER.match("a" * 64)


def test_a_folder_store_never_writes_outside_its_root(tmp_path):
    store = FolderStore(tmp_path / "root")
    with pytest.raises(ValueError, match="escapes"):
        store.upload_bytes("raw", "../../outside.csv", b"x")
    assert not (tmp_path / "outside.csv").exists()


def test_odd_names_flow_through_the_pipeline_and_the_ledger_keeps_them_exactly(services):
    azurite, dsn = services
    body = b"Date,Domain,Location,Value,Transaction_count\n1/1/2022,RETAIL,Goa,5,1\n"
    odd = [n for n in ODD_NAMES if "/../" not in n]  # the storage service normalises '..' segments itself
    for name in odd:
        upload(azurite, name, body)

    stats = run_host()

    assert stats.failures == 0
    assert sorted(r["source_blob"] for r in ledger(dsn)) == sorted(odd)
    assert all(r["status"] == "loaded" for r in ledger(dsn))
    for blob in names(azurite, "curated"):
        assert ".." not in blob.split("/")


def test_a_password_with_an_unencoded_at_reaches_no_log_line_in_any_form(monkeypatch):
    import logging

    import psycopg

    from shared.app.logs import JsonFormatter
    from shared.postgres import connections

    monkeypatch.setenv("POSTGRES_DSN", "postgresql://u:S3cret@At@PW8@127.0.0.1:1/db")
    plan = connections.plan()
    with pytest.raises(psycopg.OperationalError) as failed:
        connections.connect(plan)
    record = logging.LogRecord(
        "pipeline.load", logging.WARNING, __file__, 1, "load failed: %s (%s)", (failed.value, plan.conninfo), None
    )
    line = JsonFormatter().format(record)
    for fragment in ("S3cret", "At@PW8", "cret@At"):
        assert fragment not in line and fragment not in plan.describe
    assert "127.0.0.1" in line  # the host stays: an operator needs it


@pytest.mark.parametrize(
    "text",
    ["password=s3cret host=h", "password = 's3 cret'", "postgresql://u:s3cret@h/db", "https://h/p?password=s3cret&x=1"],
)
def test_every_written_form_of_a_password_is_redacted(text):
    assert "s3" not in redact(text) and "***" in redact(text)


def test_a_name_holding_line_ends_or_terminal_controls_prints_as_one_visible_line():
    forged = "bank/x.csv\nINFO pipeline.load: bank/y.csv loaded\x1b[2K\u202ecsv.exe"
    shown = printable(forged)
    assert "\n" not in shown and "\x1b" not in shown and "\u202e" not in shown
    assert shown == "bank/x.csv\\nINFO pipeline.load: bank/y.csv loaded\\x1b[2K\\u202ecsv.exe"
