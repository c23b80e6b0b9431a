"""Did every contender compute the same aggregates? Exact comparison, with a diff sample when not."""

from __future__ import annotations

from pathlib import Path

import polars as pl

KEYS = ("txn_date", "domain", "location")
METRICS = ("total_value", "transaction_count", "record_count")


class Mismatch(AssertionError):
    """Two contenders' aggregates differ: the benchmark is comparing different jobs."""


def normalise(df: pl.DataFrame) -> pl.DataFrame:
    """One shape for every engine's output: Date keys, String names, exact 128-bit integers."""
    missing = [c for c in (*KEYS, *METRICS) if c not in df.columns]
    if missing:
        raise Mismatch(f"aggregates lack column(s) {missing}; they have {df.columns}")
    date = pl.col("txn_date")
    if isinstance(df.schema["txn_date"], pl.Datetime):
        date = date.dt.date()
    metrics = []
    for m in METRICS:
        dtype = df.schema[m]
        if dtype.is_float():
            raise Mismatch(f"{m} is a float ({dtype}): a sum of integers must stay exact")
        metrics.append(pl.col(m).cast(pl.Int128))
    return df.select(
        date.cast(pl.Date).alias("txn_date"),
        pl.col("domain").cast(pl.String),
        pl.col("location").cast(pl.String),
        *metrics,
    ).sort(list(KEYS), nulls_last=True)


def read(path: Path) -> pl.DataFrame:
    return normalise(pl.read_parquet(path))


def difference(reference: pl.DataFrame, other: pl.DataFrame, ref_name: str, other_name: str, sample: int = 10) -> str | None:
    """None when equal; otherwise a description with a sample of differing groups."""
    if reference.equals(other):
        return None
    joined = reference.join(other, on=list(KEYS), how="full", coalesce=True, suffix="__other", nulls_equal=True)
    differs = pl.any_horizontal([pl.col(m).ne_missing(pl.col(f"{m}__other")) for m in METRICS])
    bad = joined.filter(differs)
    only_ref = bad.filter(pl.col("record_count__other").is_null()).height
    only_other = bad.filter(pl.col("record_count").is_null()).height
    renamed = bad.rename({m: f"{m}[{ref_name}]" for m in METRICS} | {f"{m}__other": f"{m}[{other_name}]" for m in METRICS})
    with pl.Config(tbl_rows=sample, tbl_cols=-1, tbl_width_chars=250, fmt_str_lengths=40):
        table = str(renamed.head(sample))
    return (
        f"aggregates differ: {ref_name} has {reference.height:,} groups, {other_name} has {other.height:,}; "
        f"{bad.height:,} groups differ ({only_ref:,} only in {ref_name}, {only_other:,} only in {other_name}). "
        f"Sample:\n{table}"
    )


def check(reference: pl.DataFrame, other: pl.DataFrame, ref_name: str, other_name: str) -> None:
    diff = difference(reference, other, ref_name, other_name)
    if diff:
        raise Mismatch(diff)
