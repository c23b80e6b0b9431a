"""The vectorised binary COPY encoder round-trips every type the loader stages, NULLs included."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import psycopg
import pytest
from psycopg import sql

from shared.postgres import copy_binary, replace, warehouse
from shared.postgres.replace import copy_rows
from tests.helpers import BANK

UTC = dt.UTC


def decimals(texts: list[str | None], scale: int) -> pl.Series:
    return pl.Series([None if t is None else Decimal(t) for t in texts], dtype=pl.Decimal(38, scale))


FRAME = pl.DataFrame(
    {
        "d": [dt.date(2022, 1, 1), None, dt.date(1999, 12, 31), dt.date(1, 1, 1), dt.date(9999, 12, 31)],
        "t": ["Goa", None, "", "Café ünï ✓", "a,b\n\"c\"\\"],
        "n0": decimals(["0", "-12345678901234567", None, str(10**30 + 7), str(-(10**37))], 0),
        "n2": decimals(["0.00", "-1.05", "123456.78", None, "0.01"], 2),
        "n6": decimals(["1.000001", None, "-99999999.5", "0", "12"], 6),
        "i8": [1, None, -5, 2**62, -(2**63)],
        "i4": pl.Series([1, -2, None, 2**31 - 1, -(2**31)], dtype=pl.Int32),
        "f8": [1.5, None, -0.0, 1e300, float("inf")],
        "b": [True, False, None, True, False],
        "ts": pl.Series(
            [dt.datetime(2024, 7, 5, 1, 15, tzinfo=UTC), None, dt.datetime(1970, 1, 1, tzinfo=UTC),
             dt.datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC), dt.datetime(1900, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)]
        ).cast(pl.Datetime("us", "UTC")),
    }
)  # fmt: skip
TYPES = ["date", "text", "numeric(38,0)", "numeric(38,2)", "numeric(38,6)", "bigint", "integer", "double precision",
         "boolean", "timestamptz"]  # fmt: skip


def normalised(rows: list[tuple]) -> list[str]:
    return sorted(repr(tuple(v.timestamp() if isinstance(v, dt.datetime) else v for v in r)) for r in rows)


def load(dsn: str, frame: pl.DataFrame, types: list[str], batch_rows: int = copy_binary.BATCH_ROWS) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        cols = ", ".join(f"c{i} {t}" for i, t in enumerate(types))
        conn.execute(f"CREATE TEMP TABLE x ({cols})")
        with conn.cursor().copy("COPY x FROM STDIN (FORMAT BINARY)") as copy:
            for piece in copy_binary.encode(frame, types, batch_rows=batch_rows):
                copy.write(piece)
        return conn.execute("SELECT * FROM x").fetchall()


@pytest.mark.parametrize("batch_rows", [2, 1 << 18])
def test_every_type_round_trips_through_postgresql(pg_dsn, batch_rows):
    assert normalised(load(pg_dsn, FRAME, TYPES, batch_rows)) == normalised(FRAME.rows())


def test_an_empty_frame_is_a_valid_stream(pg_dsn):
    assert load(pg_dsn, FRAME.head(0), TYPES) == []


def test_numeric_bytes_match_what_postgresql_sends(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        for value, scale in ((0, 0), (7, 0), (-10_000, 0), (123_456_789, 2), (-1, 6), (10**37, 0)):
            text = str(Decimal(value).scaleb(-scale))
            sent = conn.execute(f"SELECT '{text}'::numeric(38,{scale})", binary=True).pgresult.get_value(0, 0)
            assert copy_binary.numeric_bytes(value, scale) == sent, (value, scale)


def test_the_loader_stages_sums_as_bigint_when_they_fit_and_as_numeric_when_not(pg_dsn):
    shape = warehouse.aggregate_table(BANK, BANK.aggregates[0])
    small = pl.DataFrame(
        {
            "txn_date": [dt.date(2022, 1, 1)],
            "domain": ["RETAIL"],
            "location": ["Goa"],
            "total_value": pl.Series([Decimal(5)], dtype=pl.Decimal(38, 0)),
            "transaction_count": pl.Series([Decimal(2)], dtype=pl.Decimal(38, 0)),
            "record_count": [1],
        }
    )
    huge = small.with_columns(pl.Series("total_value", [Decimal(10**25)], dtype=pl.Decimal(38, 0)))
    with psycopg.connect(pg_dsn) as conn:
        for frame, staged in ((small, "bigint"), (huge, "numeric")):
            with conn.transaction():
                stage = replace.stage(conn, shape, frame)
                kind = conn.execute(
                    "SELECT data_type FROM information_schema.columns WHERE table_name = %s AND column_name = 'total_value'",
                    (stage.as_string(conn).strip('"'),),
                ).fetchone()[0]
                assert kind == staged
                got = conn.execute(sql.SQL("SELECT total_value::numeric FROM {}").format(stage)).fetchone()[0]
                assert got == frame["total_value"].item()


def test_rows_that_are_not_a_frame_still_load_row_by_row(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TEMP TABLE y (a bigint, b text)")
        copy_rows(conn, sql.Identifier("y"), [("a", "bigint"), ("b", "text")], iter([(1, "x"), (None, None)]))
        assert sorted(conn.execute("SELECT * FROM y").fetchall(), key=repr) == sorted([(1, "x"), (None, None)], key=repr)
