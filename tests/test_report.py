"""The quality report: the manifest's numbers as an offline HTML page and as the CLI's text.

Runs go through ``ingest`` with a ``FolderStore`` (the same code path as in Azure, on a local
folder), so the manifest, the page and the quarantine are the real ones.
"""

from __future__ import annotations

import gzip
import json
import re
from html import escape
from pathlib import Path

import pytest

from shared.app import ingest
from shared.core import report
from shared.core.contract import load_contracts
from shared.core.errors import FILE_REASONS
from shared.core.rules import ROW_REASON_MEANINGS, ROW_REASONS
from shared.storage.blobs import FolderStore
from tests.helpers import ROOT

CONTRACTS = load_contracts(ROOT / "contracts")
HEADER = b"Date,Domain,Location,Value,Transaction_count\n"


def run(tmp_path: Path, name: str, data: bytes) -> tuple[dict, FolderStore]:
    store = FolderStore(tmp_path / "store")
    store.upload_bytes("raw", name, data)
    return ingest.ingest(store, name, CONTRACTS, work_dir=tmp_path), store


def page(store: FolderStore, doc: dict) -> str:
    ref = doc["outputs"]["report"]
    return store.read_bytes(ref["container"], ref["name"]).decode("utf-8")


ZIPPED = gzip.compress(HEADER + b"".join(b"1/%d/2022,RETAIL,Goa,%d,1\n" % (i % 28 + 1, i * 7919 % 10007) for i in range(3000)))
GZIP_CUT = ZIPPED[: len(ZIPPED) // 2]  # an upload cut short
DIRTY = HEADER + (
    b"1/1/2022,RETAIL,Goa,5,1\n"
    b"1/1/2022,RETAIL,Goa,5,1\n"  # duplicate
    b"1/2/2022,RETAIL,Goa,,1\n"  # missing_value value
    b"1/3/2022,RETAIL,Goa,x,1\n"  # invalid_number value
    b"1/4/2022,RETAIL,Goa,7,0\n"  # out_of_range transaction_count
    b"13/1/2022,RETAIL,Goa,7,1\n"  # invalid_date txn_date
    b"1/5/2022,RETAIL,Goa,7,1,surplus\n"  # ragged_row
)


def test_the_page_has_the_counts_a_chart_of_rejects_by_reason_and_nothing_to_fetch(tmp_path):
    doc, store = run(tmp_path, "bank_transactions/day.csv", DIRTY)
    html = page(store, doc)

    for n in (7, 1, 5):  # read, valid... and rejected, as tiles
        assert f"<div class=n>{n:,}</div>" in html
    assert "<svg" in html and "</svg>" in html
    bars = re.findall(r'<text x="\d+" y="\d+" text-anchor="end" font-size="13">([a-z_]+)</text>', html)
    assert sorted(bars) == sorted(["missing_value", "invalid_number", "out_of_range", "invalid_date", "ragged_row"])
    for code in bars:  # each reason is explained in words a person can act on
        assert escape(ROW_REASON_MEANINGS[code]) in html
    assert "contract v1" in html and "every row is accounted for" in html
    # offline: no scripts, no stylesheets or images to load, no address of any kind
    assert not re.search(r"<script|<link|<img|<iframe|src=|href=|url\(|https?:|//[a-z]", html, re.IGNORECASE)


def test_the_page_and_the_text_show_column_statistics_and_drift(tmp_path):
    data = b"Notes,Domain,Date,Location,Value,Transaction_count\nhi,RETAIL,1/1/2022,Goa,5,1\nho,PUBLIC,1/2/2022,Pune,9,2\n"
    doc, store = run(tmp_path, "bank_transactions/drift.csv", data)
    html, text = page(store, doc), report.text_summary(doc)
    columns = doc["quality"]["columns"]
    assert columns["value"] == {"type": "integer", "nulls": 0, "null_rate": 0.0, "min": 5, "max": 9}
    assert columns["txn_date"]["min"] == "2022-01-01" and columns["txn_date"]["max"] == "2022-01-02"
    for shown in (html, text):
        assert "Notes" in shown and "left out of every output" in shown
        assert "another order than the contract" in shown
        assert "2022-01-01" in shown and "PUBLIC" in shown


def test_the_text_summary_says_what_the_page_says(tmp_path):
    doc, _ = run(tmp_path, "bank_transactions/day.csv", DIRTY)
    text = report.text_summary(doc)
    assert text.splitlines()[0].endswith("· succeeded · contract v1")
    assert "rows read 7 = valid 1 + rejected 5 + duplicate 1" in text
    for reason, n, cols in report.reasons_by_code(doc):
        line = next(x for x in text.splitlines() if x.strip().startswith(reason))
        assert f"{n:,}" in line and all((c or "(row)") in line for c, _ in cols)
    assert "aggregate daily: 1 groups" in text


def test_text_is_escaped_in_the_page(tmp_path):
    doc, store = run(tmp_path, "bank_transactions/<b>bold</b>.csv", HEADER + b"1/1/2022,<i>x</i>,Goa,5,1\n")
    html = page(store, doc)
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<i>x</i>" not in html and "&lt;I&gt;X&lt;/I&gt;" in html  # the domain, upper-cased, as min and max


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("bank_transactions/empty.csv", b"", "empty_file"),
        ("bank_transactions/blank.csv.gz", gzip.compress(b"\n \n"), "empty_file"),
        ("bank_transactions/no-value.csv", b"Date,Domain,Location,Transaction_count\n1/1/2022,RETAIL,Goa,3\n", "missing_columns"),
        ("bank_transactions/picture.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "not_csv"),
        ("bank_transactions/cut.csv.gz", GZIP_CUT, "undecodable"),
        ("bank_transactions/twice.csv", b"Date,Date,Domain,Location,Value,Transaction_count\n", "unexpected_columns"),
        ("bank_transactions/drift.csv", HEADER + b"1/1/2022,RETAIL,Goa,lots,1\n" * 30, "type_drift"),
        ("nobody/file.csv", HEADER + b"1/1/2022,RETAIL,Goa,5,1\n", "unknown_dataset"),
        ("bank_transactions/file.xlsx", b"PK\x03\x04", "unsupported_file"),
    ],
)
def test_a_refused_file_is_reported_with_its_code_what_it_means_and_the_quarantined_copy(tmp_path, name, data, code):
    doc, store = run(tmp_path, name, data)
    assert doc["status"] == "rejected" and doc["error"]["code"] == code
    text = report.text_summary(doc)
    assert f"refused: {code}" in text and FILE_REASONS[code] in text
    html = report.html_report(doc)
    assert code in html and escape(FILE_REASONS[code]) in html and "<svg" not in html
    copy = doc["outputs"]["quarantined"]
    assert store.read_bytes(copy["container"], copy["name"]) == data
    error = doc["outputs"]["error_report"]
    assert json.loads(store.read_bytes(error["container"], error["name"]))["error"]["code"] == code


def test_every_reason_code_has_words_for_a_person():
    assert set(ROW_REASON_MEANINGS) == set(ROW_REASONS)
    assert all(len(v) > 20 for v in ROW_REASON_MEANINGS.values())
    assert {"empty_file", "missing_columns", "not_csv", "undecodable", "unknown_dataset"} <= set(FILE_REASONS)


def test_a_high_share_of_duplicates_is_said_out_loud_with_the_rule_that_dropped_them(tmp_path):
    repeated = HEADER + b"1/1/2022,RETAIL,Goa,5,1\n" * 8 + b"1/2/2022,RETAIL,Goa,6,1\n" * 2
    doc, store = run(tmp_path, "bank_transactions/repeats.csv", repeated)
    assert doc["counts"]["rows_duplicate"] == 8
    text = report.text_summary(doc)
    assert '8 of 10 rows (80.0%) were dropped as duplicates under [dedup] mode = "row"' in text
    assert 'set [dedup] mode = "none"' in text and "WARNING" in text
    assert "were dropped as duplicates" in page(store, doc)


def test_a_few_duplicates_and_a_file_with_valid_rows_raise_no_warning(tmp_path):
    doc, _ = run(tmp_path, "bank_transactions/day.csv", DIRTY)  # 1 duplicate of 7 rows is 14%: loud
    assert report.count_warnings(doc)
    quiet = HEADER + b"".join(b"1/%d/2022,RETAIL,Goa,%d,1\n" % (i % 28 + 1, i) for i in range(40)) + b"1/1/2022,RETAIL,Goa,0,1\n"
    doc, _ = run(tmp_path, "bank_transactions/quiet.csv", quiet)
    assert doc["counts"]["rows_duplicate"] == 1 and report.count_warnings(doc) == []


def test_a_file_that_yields_no_valid_row_says_so(tmp_path):
    doc, _ = run(tmp_path, "bank_transactions/bad.csv", HEADER + b"1/1/2022,RETAIL,Goa,x,1\n")
    assert report.count_warnings(doc) == ["no row was valid: this file adds nothing to the aggregates (see the rejects)"]
