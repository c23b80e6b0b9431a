"""Schema drift: a new column, a missing optional column, a type that no longer parses.

Each contract says what happens (``[schema]``); the default is the safe choice: a new column is
kept out of every output and named in the manifest, a missing optional column is null, and a
column that mostly stops parsing refuses the whole file instead of replacing its previous
contribution with a file's worth of rejects.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from shared.core.errors import FileRefused
from tests.helpers import BANK, clean_rows, contract_from, rejects, transform_bytes

HEADER = b"Date,Domain,Location,Value,Transaction_count"
ROW = b"1/1/2022,RETAIL,Goa,5,1"

CONTRACT = """\
[dataset]
name = "drift"
version = 3

[schema]
{schema}

[[columns]]
name = "city"
source = "City"
type = "string"

[[columns]]
name = "amount"
source = "Amount"
type = "integer"

[[columns]]
name = "note"
source = "Note"
type = "string"
required = false

[[aggregates]]
name = "by_city"
group_by = ["city"]
metrics = [{{ name = "total", op = "sum", column = "amount" }}]
"""


def drift_contract(tmp_path, schema: str = ""):
    return contract_from(tmp_path, CONTRACT.format(schema=schema))


# --- a new column ---------------------------------------------------------------------------------


def test_by_default_a_new_column_is_kept_out_of_every_output_and_named_as_drift(tmp_path):
    data = b"City,Amount,Note,Shoe Size\nGoa,5,hi,42\nPune,x,ho,43\n"
    result = transform_bytes(data, tmp_path, contract=drift_contract(tmp_path))
    assert result.drift["extra_columns"] == ["Shoe Size"] and result.drift["extra_columns_policy"] == "discard"
    for path in (result.outputs.clean, result.outputs.rejects, result.outputs.aggregates["by_city"]):
        assert not any("shoe" in c.lower() for c in pl.read_parquet(path).columns)
    assert clean_rows(result).drop("_line").rows() == [("Goa", 5, "hi")]


def test_keep_carries_a_new_column_in_the_clean_and_rejected_rows_but_never_the_aggregates(tmp_path):
    contract = drift_contract(tmp_path, 'extra_columns = "keep"')
    data = b"City,Amount,Note,Shoe Size,2nd phone\nGoa,5,hi,42,555\nPune,x,ho,43,\n"
    result = transform_bytes(data, tmp_path, contract=contract)
    assert result.drift["extra_columns_policy"] == "keep"
    clean = clean_rows(result)
    assert clean.select("city", "extra_shoe_size", "extra_c_2nd_phone").rows() == [("Goa", "42", "555")]
    assert rejects(result).select("line", "extra_shoe_size").rows() == [(3, "43")]
    assert pl.read_parquet(result.outputs.aggregates["by_city"]).columns == ["city", "total", "_source_blob", "_run_id"]


def test_reject_file_refuses_a_file_with_a_column_the_contract_does_not_know(tmp_path):
    contract = drift_contract(tmp_path, 'extra_columns = "reject_file"')
    with pytest.raises(FileRefused) as refused:
        transform_bytes(b"City,Amount,Note,Shoe Size\nGoa,5,hi,42\n", tmp_path, contract=contract)
    assert refused.value.code == "unexpected_columns" and "Shoe Size" in refused.value.detail
    # the same contract takes a file without the new column
    assert transform_bytes(b"City,Amount,Note\nGoa,5,hi\n", tmp_path / "ok", contract=contract).rows_valid == 1


def test_a_header_naming_a_column_twice_is_refused_whatever_the_policy(tmp_path):
    with pytest.raises(FileRefused) as refused:
        transform_bytes(b"City,Amount, city \nGoa,5,Pune\n", tmp_path, contract=drift_contract(tmp_path))
    assert refused.value.code == "unexpected_columns"


# --- a missing column ------------------------------------------------------------------------------


def test_by_default_a_missing_optional_column_is_null_and_named_as_drift(tmp_path):
    result = transform_bytes(b"City,Amount\nGoa,5\n", tmp_path, contract=drift_contract(tmp_path))
    assert clean_rows(result).drop("_line").rows() == [("Goa", 5, None)]
    assert result.drift["missing_optional_columns"] == ["Note"]


def test_missing_optional_reject_file_refuses_a_file_without_an_optional_column(tmp_path):
    contract = drift_contract(tmp_path, 'missing_optional = "reject_file"')
    with pytest.raises(FileRefused) as refused:
        transform_bytes(b"City,Amount\nGoa,5\n", tmp_path, contract=contract)
    assert refused.value.code == "missing_columns" and "Note" in refused.value.detail


def test_a_missing_required_column_always_refuses_the_file(tmp_path):
    with pytest.raises(FileRefused) as refused:
        transform_bytes(b"City,Note\nGoa,hi\n", tmp_path, contract=drift_contract(tmp_path))
    assert refused.value.code == "missing_columns" and "Amount" in refused.value.detail


# --- headers that only look different --------------------------------------------------------------


def test_headers_match_ignoring_case_spaces_and_a_bom_in_any_order(tmp_path):
    data = "\ufeff  NOTE ,amount,\tcity \nhi,5,Goa\n".encode()
    result = transform_bytes(data, tmp_path, contract=drift_contract(tmp_path))
    assert clean_rows(result).drop("_line").rows() == [("Goa", 5, "hi")]
    assert result.drift["column_order_changed"] is True
    assert result.drift["extra_columns"] == [] and result.drift["missing_optional_columns"] == []


def test_an_unnamed_column_is_counted_and_ignored(tmp_path):
    result = transform_bytes(b"City,,Amount,Note\nGoa,?,5,hi\n", tmp_path, contract=drift_contract(tmp_path))
    assert result.drift["unnamed_columns"] == 1 and result.drift["extra_columns"] == []
    assert result.rows_valid == 1


# --- a type that no longer parses -------------------------------------------------------------------


def test_a_column_that_mostly_stops_parsing_refuses_the_file_as_type_drift(tmp_path):
    rows = b"".join(b"Goa,%s,hi\n" % (b"12,5" if i % 3 else b"7") for i in range(30))  # 20 of 30 unparsable
    data = b"City,Amount,Note\n" + rows.replace(b"12,5", b'"12,5"')
    with pytest.raises(FileRefused) as refused:
        transform_bytes(data, tmp_path, contract=drift_contract(tmp_path))
    assert refused.value.code == "type_drift"
    assert "20 of 30 values of 'Amount' are not a valid integer (invalid_number)" in refused.value.detail


def test_below_the_threshold_unparsable_values_are_rejected_row_by_row(tmp_path):
    rows = b"".join(b"Goa,%s,hi\n" % (b"x" if i % 3 == 0 else b"7") for i in range(30))  # 10 of 30
    result = transform_bytes(b"City,Amount,Note\n" + rows, tmp_path, contract=drift_contract(tmp_path))
    assert (result.rows_valid, result.rows_rejected) == (1, 10)  # 19 more valid rows are duplicates
    assert result.rejects_by_reason == [{"reason": "invalid_number", "column": "amount", "rows": 10}]


def test_the_threshold_is_the_contract_s_to_set(tmp_path):
    rows = b"".join(b"Goa,%s,hi\n" % (b"x" if i % 3 == 0 else b"7") for i in range(30))
    contract = drift_contract(tmp_path, "max_invalid_share = 0.25")
    with pytest.raises(FileRefused) as refused:
        transform_bytes(b"City,Amount,Note\n" + rows, tmp_path, contract=contract)
    assert refused.value.code == "type_drift" and "at most 25%" in refused.value.detail


def test_a_handful_of_values_is_too_few_to_call_drift(tmp_path):
    rows = b"Goa,x,hi\n" * 19  # all bad, but only 19 values: row by row
    result = transform_bytes(b"City,Amount,Note\n" + rows, tmp_path, contract=drift_contract(tmp_path))
    assert result.rows_rejected == 19


def test_empty_values_never_count_as_type_drift(tmp_path):
    rows = b"Goa,,hi\n" * 40 + b"Goa,5,hi\n"  # a column mostly empty is missing values, not a new type
    result = transform_bytes(b"City,Amount,Note\n" + rows, tmp_path, contract=drift_contract(tmp_path))
    assert result.rejects_by_reason == [{"reason": "missing_value", "column": "amount", "rows": 40}]


@pytest.mark.parametrize(
    ("schema", "problem"), [('extra_columns = "ignore"', "is not one of"), ("max_invalid_share = 0", "greater than 0")]
)
def test_a_drift_policy_is_checked_when_the_contract_loads(tmp_path, schema, problem):
    from shared.core.contract import ContractError

    with pytest.raises(ContractError, match=problem) as err:
        drift_contract(tmp_path, schema)
    assert err.value.line == 6


# --- end to end: what drift does to PostgreSQL ------------------------------------------------------


def test_drift_end_to_end_a_new_column_changes_nothing_in_postgres_and_type_drift_is_recorded(services, tmp_path):
    from tests import oracle
    from tests.test_end_to_end import blobs, ledger, names, run_host, upload, view_rows

    azurite, dsn = services
    plain = HEADER + b"\n" + b"\n".join([ROW, b"1/2/2022,PUBLIC,Pune,7,2"]) + b"\n"
    with_extra = b"Branch," + HEADER + b"\n" + b"\n".join([b"B1," + ROW, b"B2,1/2/2022,PUBLIC,Pune,7,2"]) + b"\n"
    drifted = HEADER + b"\n" + b"1/3/2022,RETAIL,Goa,five,1\n" * 30
    upload(azurite, "bank_transactions/plain.csv", plain)
    upload(azurite, "bank_transactions/extra.csv", with_extra)
    upload(azurite, "bank_transactions/drifted.csv", drifted)

    run_host()

    (tmp_path / "plain.csv").write_bytes(plain)
    once = oracle.bank(tmp_path / "plain.csv")
    assert view_rows(dsn) == once.add(once).view_rows()  # the extra column's file counts like the plain one
    by_blob = {r["source_blob"]: r for r in ledger(dsn)}
    assert by_blob["bank_transactions/drifted.csv"]["status"] == "rejected"
    assert by_blob["bank_transactions/drifted.csv"]["error_code"] == "type_drift"
    assert by_blob["bank_transactions/extra.csv"]["status"] == "loaded"
    manifests = [
        json.loads(blobs(azurite).get_blob_client("curated", n).download_blob().readall())
        for n in names(azurite, "curated", "bank_transactions/manifests/")
    ]
    drift = {m["source"]["blob"]: m["quality"]["drift"] for m in manifests}
    assert drift["bank_transactions/extra.csv"]["extra_columns"] == ["Branch"]
    assert drift["bank_transactions/plain.csv"]["extra_columns"] == []
    assert BANK.drift.extra_columns == "discard"


def test_a_file_refused_for_type_drift_still_accounts_for_every_row_it_read(tmp_path):
    from shared.app import ingest
    from shared.storage.blobs import FolderStore

    store = FolderStore(tmp_path / "store")
    store.upload_bytes("raw", "bank_transactions/drifted.csv", HEADER + b"\n" + b"1/3/2022,RETAIL,Goa,five,1\n" * 30)
    doc = ingest.ingest(store, "bank_transactions/drifted.csv", {"bank_transactions": BANK}, work_dir=tmp_path)
    assert doc["status"] == "rejected" and doc["error"]["code"] == "type_drift"
    c = doc["counts"]
    assert (c["rows_read"], c["rows_valid"], c["rows_rejected"], c["rows_duplicate"]) == (30, 0, 30, 0)
