"""The second bundled contract, taxi trips: another shape, the same code.

Local timestamps with daylight saving, money as decimals, optional fields, spellings mapped,
a key-based de-duplication, a monthly aggregate (sum, mean, max, min of a timestamp, distinct
count) and an hourly one. The transform and the PostgreSQL views are compared with
tests/taxi_oracle.py, a plain-Python recomputation that shares no code with shared/.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import math
from decimal import Decimal
from pathlib import Path

import polars as pl
import psycopg

from shared.core.contract import load_contract
from shared.tools import samples
from tests import taxi_oracle
from tests.helpers import ROOT, contract_from, transform_bytes

TAXI = load_contract(ROOT / "contracts" / "taxi_trips.toml")
DATASET = "taxi_trips"


def sample(tmp_path: Path, rows: int, seed: int) -> Path:
    return samples.taxi_trips(tmp_path / f"taxi-{seed}-{rows}.csv", rows, seed=seed, dirty=0.05, duplicates=0.03)


def monthly_rows(df: pl.DataFrame) -> dict[tuple, dict]:
    return {(r["month"], r["pickup_borough"]): r for r in df.iter_rows(named=True)}


def assert_monthly(got: dict[tuple, dict], expected: dict[tuple, dict]) -> None:
    assert set(got) == set(expected)
    for key, exp in expected.items():
        row = got[key]
        assert row["trips"] == exp["trips"], key
        assert Decimal(row["passengers"]) == exp["passengers"], key
        assert Decimal(row["fare_total"]) == exp["fare_total"], key
        assert math.isclose(row["distance_mean"], exp["distance_mean"], rel_tol=1e-12), key
        assert Decimal(row["longest_trip"]) == exp["longest_trip"], key
        assert row["first_pickup"] == exp["first_pickup"], key
        assert row["vendors"] == exp["vendors"], key


def assert_hourly(got: pl.DataFrame, expected: dict[dt.datetime, dict]) -> None:
    rows = {r["hour"]: r for r in got.iter_rows(named=True)}
    assert set(rows) == set(expected)
    for hour, exp in expected.items():
        assert rows[hour]["trips"] == exp["trips"]
        assert math.isclose(rows[hour]["total_mean"], exp["total_mean"], rel_tol=1e-12)
        assert Decimal(rows[hour]["tips"]) == exp["tips"]


# --- the generator ---------------------------------------------------------------------------


def test_the_sample_is_deterministic_crlf_and_has_a_column_the_contract_does_not_know(tmp_path):
    a = samples.taxi_trips(tmp_path / "a.csv", 3_000, seed=5)
    b = samples.taxi_trips(tmp_path / "b.csv", 3_000, seed=5)
    assert a.read_bytes() == b.read_bytes()
    data = a.read_bytes()
    assert data.count(b"\r\n") == data.count(b"\n") == 3_001
    assert b"Congestion Surcharge" in data.split(b"\r\n", 1)[0]
    assert "taxi_trips" in samples.GENERATORS


# --- the transform against the oracle --------------------------------------------------------


def test_counts_reasons_and_both_aggregates_match_an_independent_recomputation(tmp_path):
    path = sample(tmp_path, 25_000, seed=11)
    expected = taxi_oracle.taxi(path)
    result = transform_bytes(path.read_bytes(), tmp_path, contract=TAXI, chunk_bytes=96 * 1024)

    assert result.balanced
    assert (result.rows_read, result.rows_valid, result.rows_rejected, result.rows_duplicate) == (
        expected.read,
        expected.valid,
        expected.rejected,
        expected.duplicate,
    )
    assert {(r["reason"], r["column"]): r["rows"] for r in result.rejects_by_reason} == expected.reasons
    # every reason the dirt can produce is there, so each rule of the contract was exercised
    assert {r for r, _ in expected.reasons} >= {
        "missing_value", "invalid_timestamp", "out_of_range", "not_allowed", "pattern_mismatch",
        "invalid_number", "invalid_boolean",
    }  # fmt: skip
    assert result.drift["extra_columns"] == ["Congestion Surcharge"]

    monthly = pl.read_parquet(result.outputs.aggregates["monthly"])
    assert_monthly(monthly_rows(monthly), expected.monthly())
    assert_hourly(pl.read_parquet(result.outputs.aggregates["hourly"]), expected.hourly())
    # the distinct values behind the distinct count, for merging files exactly in PostgreSQL
    distinct = pl.read_parquet(result.outputs.distinct_values["monthly__vendors"])
    per_key = distinct.group_by("month", "pickup_borough").agg(pl.col("value").n_unique().alias("n"))
    assert {(r[0], r[1]): r[2] for r in per_key.rows()} == {k: v["vendors"] for k, v in expected.monthly().items()}


def test_cleaning_maps_spellings_cases_and_the_us_time_format_and_converts_to_utc(tmp_path):
    header = (
        "Trip ID,Vendor,Pickup Datetime,Dropoff Datetime,Pickup Borough,Passenger Count,Trip Distance,"
        "Payment Type,Fare Amount,Tip Amount,Total Amount,Store and Fwd\r\n"
    )
    rows = (
        "t000000001,verifone,07/04/2024 09:15:00 PM,2024-07-04 21:40:00,  staten island ,NA,3.5,1,12.50,,15.00,Y\r\n"
        "T000000002,2,2024-11-03 01:30:00,2024-11-03 01:50:00,ewr,2,10,Credit Card,40,5.00,47.5,n\r\n"
    )
    result = transform_bytes((header + rows).encode(), tmp_path, contract=TAXI)
    assert result.rows_valid == 2, result.rejects_by_reason
    clean = pl.read_parquet(result.outputs.clean).sort("_line")
    first, second = clean.iter_rows(named=True)
    assert (first["trip_id"], first["vendor"], first["pickup_borough"], first["payment_type"]) == (
        "T000000001", "VTS", "Staten Island", "card",
    )  # fmt: skip
    assert first["pickup_at"] == dt.datetime(2024, 7, 5, 1, 15, tzinfo=dt.UTC)  # EDT, UTC-4
    assert (first["passenger_count"], first["tip_amount"], first["store_and_forward"]) == (None, None, True)
    assert (second["vendor"], second["pickup_borough"], second["trip_distance"]) == ("VTS", "EWR", Decimal("10.00"))
    # 01:30 on 3 November 2024 happens twice in New York; the contract takes the first (EDT)
    assert second["pickup_at"] == dt.datetime(2024, 11, 3, 5, 30, tzinfo=dt.UTC)


def test_a_trip_sent_twice_is_counted_once_even_when_its_spelling_differs(tmp_path):
    header = "Trip ID,Vendor,Pickup Datetime,Dropoff Datetime,Pickup Borough,Trip Distance,Fare Amount,Total Amount\n"
    row = "T000000001,{v},2024-02-01 10:00:00,2024-02-01 10:10:00,Queens,1.00,5.00,6.00\n"
    data = (header + row.format(v="CMT") + row.format(v="1") + row.format(v="VTS")).encode()
    result = transform_bytes(data, tmp_path, contract=TAXI)
    assert (result.rows_valid, result.rows_duplicate) == (1, 2)
    assert result.drift["missing_optional_columns"] == ["Passenger Count", "Payment Type", "Tip Amount", "Store and Fwd"]


# --- time buckets and distinct counts ---------------------------------------------------------


def test_a_month_bucket_follows_the_column_s_time_zone(tmp_path):
    contract = contract_from(
        tmp_path,
        '[dataset]\nname = "zoned"\nversion = 1\n\n'
        '[[columns]]\nname = "at"\ntype = "timestamp"\ntimezone = "America/New_York"\n\n'
        '[[aggregates]]\nname = "monthly"\ngroup_by = [{ column = "at", bucket = "month", name = "month" }]\n'
        'metrics = [{ name = "n", op = "count" }]\n',
    )
    # 22:00 on 31 January in New York is 03:00 on 1 February in UTC: a January trip
    result = transform_bytes(b"at\n2024-01-31 22:00:00\n", tmp_path, contract=contract)
    assert pl.read_parquet(result.outputs.aggregates["monthly"])["month"].to_list() == [dt.date(2024, 1, 1)]


def test_a_distinct_count_ignores_missing_values_in_the_file_as_the_view_does(tmp_path):
    contract = contract_from(
        tmp_path,
        '[dataset]\nname = "distinct"\nversion = 1\n\n'
        '[[columns]]\nname = "k"\ntype = "string"\n\n'
        '[[columns]]\nname = "v"\ntype = "string"\nrequired = false\n\n'
        '[[aggregates]]\nname = "by_k"\ngroup_by = ["k"]\nmetrics = [{ name = "vs", op = "count_distinct", column = "v" }]\n',
    )
    result = transform_bytes(b"k,v\na,x\na,\na,y\n", tmp_path, contract=contract)
    assert pl.read_parquet(result.outputs.aggregates["by_k"])["vs"].to_list() == [2]


# --- end to end through Azurite and PostgreSQL -------------------------------------------------


def view(dsn: str, name: str) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(f"SELECT * FROM analytics.{name}")  # a fixed, known view name
        cols = [d.name for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    return rows


def test_two_taxi_files_land_in_postgresql_as_the_oracle_says(services, tmp_path):
    from tests.test_end_to_end import blobs, ledger, names, read_parquet, run_host, upload

    azurite, dsn = services
    a, b = sample(tmp_path, 6_000, seed=21), sample(tmp_path, 4_000, seed=22)
    upload(azurite, f"{DATASET}/2024/a.csv", a.read_bytes())
    upload(azurite, f"{DATASET}/2024/b.csv.gz", gzip.compress(b.read_bytes()))

    stats = run_host()

    assert stats.failures == 0
    expected = taxi_oracle.taxi(a).add(taxi_oracle.taxi(b))
    monthly = {(r["month"], r["pickup_borough"]): r for r in view(dsn, "taxi_trips_monthly")}
    assert len(monthly) == len(view(dsn, "taxi_trips_monthly")), "the view has duplicate keys"
    assert_monthly(monthly, expected.monthly())
    hourly = view(dsn, "taxi_trips_hourly")
    assert_hourly(pl.DataFrame(hourly, infer_schema_length=None), expected.hourly())
    shared_months = set(taxi_oracle.taxi(a).monthly()) & set(taxi_oracle.taxi(b).monthly())
    assert shared_months, "the two files should share keys so that merging is tested"

    # the contract version travels with the data: manifest, Parquet metadata, ledger
    rows = ledger(dsn)
    assert [(r["status"], r["contract_version"]) for r in rows] == [("loaded", 1), ("loaded", 1)]
    for manifest_name in names(azurite, "curated", f"{DATASET}/manifests/"):
        manifest = json.loads(blobs(azurite).get_blob_client("curated", manifest_name).download_blob().readall())
        assert manifest["contract_version"] == TAXI.version
        assert manifest["quality"]["drift"]["extra_columns"] == ["Congestion Surcharge"]
        clean = blobs(azurite).get_blob_client("curated", manifest["outputs"]["clean"]["name"]).download_blob().readall()
        meta = pl.read_parquet_metadata(io.BytesIO(clean))
        assert (meta["pipeline.contract_version"], meta["pipeline.dataset"]) == (str(TAXI.version), DATASET)
        assert read_parquet(azurite, "curated", manifest["outputs"]["aggregates"]["monthly"]["name"]).height > 0
        report = blobs(azurite).get_blob_client("curated", manifest["outputs"]["report"]["name"]).download_blob().readall()
        assert b"<svg" in report and b"taxi_trips" in report


def test_day_and_hour_buckets_follow_the_column_s_time_zone_and_hours_stay_instants(tmp_path):
    contract = contract_from(
        tmp_path,
        '[dataset]\nname = "kolkata"\nversion = 1\n\n'
        '[[columns]]\nname = "at"\ntype = "timestamp"\ntimezone = "Asia/Kolkata"\n\n'
        '[[aggregates]]\nname = "daily"\ngroup_by = [{ column = "at", bucket = "day", name = "day" }]\n'
        'metrics = [{ name = "n", op = "count" }]\n\n'
        '[[aggregates]]\nname = "hourly"\ngroup_by = [{ column = "at", bucket = "hour", name = "hour" }]\n'
        'metrics = [{ name = "n", op = "count" }]\n',
    )
    # 00:10 and 00:50 on 2 March in Kolkata (+05:30) are 18:40 and 19:20 on 1 March in UTC:
    # one local day and one local hour, which starts at 18:30 UTC
    result = transform_bytes(b"at\n2024-03-02 00:10:00\n2024-03-02 00:50:00\n", tmp_path, contract=contract)
    daily = pl.read_parquet(result.outputs.aggregates["daily"])
    hourly = pl.read_parquet(result.outputs.aggregates["hourly"])
    assert daily.select("day", "n").rows() == [(dt.date(2024, 3, 2), 2)]
    assert hourly.select("hour", "n").rows() == [(dt.datetime(2024, 3, 1, 18, 30, tzinfo=dt.UTC), 2)]
