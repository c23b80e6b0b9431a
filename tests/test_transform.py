"""The pure transform: cleaning, rejects with reasons, de-duplication, aggregates, accounting."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from shared.core.errors import FileRefused
from shared.tools import samples
from tests import oracle
from tests.helpers import clean_rows, rejects, transform_bytes

HEADER = b"Date,Domain,Location,Value,Transaction_count\n"


def test_cleaning_trims_uppercases_and_parses_both_date_formats(tmp_path):
    data = HEADER + b" 1/2/2022 , retail ,  Goa ,  10 , 2 \n2022-01-03,Medical,Pune,5,1\n"
    result = transform_bytes(data, tmp_path)
    rows = clean_rows(result).drop("_line").rows()
    assert rows == [(dt.date(2022, 1, 2), "RETAIL", "Goa", 10, 2), (dt.date(2022, 1, 3), "MEDICAL", "Pune", 5, 1)]


def test_each_broken_rule_is_rejected_with_its_reason_column_line_and_raw_text(tmp_path):
    data = HEADER + (
        b"1/1/2022,RETAIL,Goa,,1\n"  # line 2: missing value
        b"13/45/2022,RETAIL,Goa,5,1\n"  # line 3: invalid date
        b"1/1/2022,RETAIL,Goa,12x,1\n"  # line 4: invalid number
        b"1/1/2022,RETAIL,Goa,-3,1\n"  # line 5: negative value
        b"1/1/2022,RETAIL,Goa,3,0\n"  # line 6: transaction count below 1
        b"1/1/2022,RETAIL,Goa,3,1,surplus\n"  # line 7: too many fields
        b"1/1/22,RETAIL,Goa,3,1\n"  # line 8: a two-digit year is not a date we accept
        b"1/1/2022,RETAIL,Goa,3,1\n"  # line 9: fine
    )
    result = transform_bytes(data, tmp_path)
    got = rejects(result).select("line", "reason", "column", "value").rows()
    assert got == [
        (2, "missing_value", "value", None),
        (3, "invalid_date", "txn_date", "5"),
        (4, "invalid_number", "value", "12x"),
        (5, "out_of_range", "value", "-3"),
        (6, "out_of_range", "transaction_count", "3"),
        (7, "ragged_row", None, "3"),
        (8, "invalid_date", "txn_date", "3"),
    ]
    assert rejects(result)["extra_fields"].to_list()[5] == "surplus"
    assert (result.rows_read, result.rows_valid, result.rows_rejected) == (8, 1, 7)


def test_exact_duplicates_after_cleaning_are_kept_once_and_counted(tmp_path):
    data = HEADER + b"1/1/2022,RETAIL,Goa,5,1\n1/1/2022, retail ,Goa,5,1\n2022-01-01,RETAIL,Goa,5,1\n1/1/2022,RETAIL,Goa,6,1\n"
    result = transform_bytes(data, tmp_path)
    assert (result.rows_valid, result.rows_duplicate) == (2, 2)
    assert clean_rows(result)["_line"].to_list() == [2, 5]  # the first occurrence is the one kept


def test_aggregates_and_counts_match_an_independent_recomputation(tmp_path):
    path = samples.bank_transactions(tmp_path / "s.csv", 30_000, seed=11, dirty=0.03, duplicates=0.05)
    expected = oracle.bank(path)
    result = transform_bytes(path.read_bytes(), tmp_path, chunk_bytes=64 * 1024)  # many chunks

    assert result.balanced
    assert (result.rows_read, result.rows_valid, result.rows_rejected, result.rows_duplicate) == (
        expected.read,
        expected.valid,
        expected.rejected,
        expected.duplicate,
    )
    assert {(r["reason"], r["column"]): r["rows"] for r in result.rejects_by_reason} == expected.reasons
    agg = pl.read_parquet(result.outputs.aggregates["daily"])
    got = {
        (r["txn_date"], r["domain"], r["location"], Decimal(r["total_value"]), Decimal(r["transaction_count"]), r["record_count"])
        for r in agg.iter_rows(named=True)
    }
    assert got == expected.view_rows()


def test_sums_are_exact_beyond_64_bits(tmp_path):
    big = 10**13
    rows = b"".join(b"1/1/2022,RETAIL,Goa,%d,1000000\n" % (big + i) for i in range(1_000))
    result = transform_bytes(HEADER + rows, tmp_path)
    total = pl.read_parquet(result.outputs.aggregates["daily"])["total_value"].item()
    assert Decimal(total) == sum(Decimal(big + i) for i in range(1_000))


def test_shuffled_columns_and_extra_columns_are_matched_by_name_and_reported_as_drift(tmp_path):
    data = b"\xef\xbb\xbf transaction_COUNT ,Location,Notes,DATE,domain,Value\n2,Goa,hello,1/1/2022,RETAIL,7\n"
    result = transform_bytes(data, tmp_path)
    assert clean_rows(result).drop("_line").rows() == [(dt.date(2022, 1, 1), "RETAIL", "Goa", 7, 2)]
    assert result.drift["extra_columns"] == ["Notes"]
    assert result.drift["column_order_changed"] is True
    assert "Notes" not in pl.read_parquet(result.outputs.aggregates["daily"]).columns


def test_a_header_only_file_is_a_run_with_zero_rows(tmp_path):
    result = transform_bytes(HEADER, tmp_path)
    assert (result.rows_read, result.rows_valid, result.groups) == (0, 0, {"daily": 0})


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"\n\n  \n", "empty_file"),
        (b"Date,Domain,Location,Transaction_count\n1/1/2022,RETAIL,Goa,1\n", "missing_columns"),
        (bytes(range(256)) * 64, "not_csv"),
        (b"PK\x03\x04" + b"\x00" * 200, "not_csv"),
        (HEADER + b"1/1/2022,RETAIL,Goa,5,1\n" + b"1/1/2022,RETAIL,Goa,x,1\n" * 40, "type_drift"),
    ],
)
def test_whole_file_refusals_have_codes(tmp_path, data, code):
    with pytest.raises(FileRefused) as refused:
        transform_bytes(data, tmp_path)
    assert refused.value.code == code
