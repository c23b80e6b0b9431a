"""The curated zone as Delta tables: which tables a contract has, and what a run adds to them.

Every dataset has one Delta table of clean rows and one per aggregate output (the lake twin of
the PostgreSQL ``_by_file`` table, and of the side table of a distinct count):

    curated/<dataset>/tables/clean/                         every valid row of every current source
    curated/<dataset>/tables/<aggregate table>/             per-file partial aggregates
    curated/<dataset>/tables/<aggregate table>__<metric>/   per-file distinct values

A table is partitioned by ``_source_key`` (``shared.core.layout.source_key``): a source's rows are
exactly one partition, so replacing them is an overwrite of that partition, and commits for
different sources never touch the same files and never conflict.

Ingest writes a run's Parquet files into the partition folder but commits nothing; it records
what it wrote (paths, sizes, Delta statistics, the table schema) in a *staged commit* document.
The loader commits it once PostgreSQL holds the same run (``shared.app.lake``), so the tables
move with the ledger, never ahead of it. This module is pure: it names things, maps polars
types to Delta types and computes the statistics; ``shared.storage.lake`` talks to delta-rs.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import polars as pl

from shared.core.contract import Contract

__all__ = [
    "CLEAN",
    "PARTITION",
    "STATS_STRING_LIMIT",
    "StagedCommit",
    "StagedFile",
    "StagedTable",
    "delta_schema",
    "delta_type",
    "file_stats",
    "removed_version",
    "run_version",
    "tables",
]

CLEAN = "clean"
"""The output name (in the manifest) and table name of the clean rows."""
PARTITION = "_source_key"
"""The partition column of every lake table: one partition per source blob."""
STATS_STRING_LIMIT = 32
"""Strings longer than this get no min/max statistic (Spark truncates there; a truncated max
would no longer be an upper bound)."""


class StagedFile(TypedDict):
    """A Parquet file ingest wrote into a table's partition folder, not yet committed."""

    path: str  # relative to the table's root: ``_source_key=<key>/<run>.part-00000.parquet``
    size: int
    rows: int
    stats: str  # Delta's ``add.stats`` JSON


class StagedTable(TypedDict):
    table: str  # the table's folder under ``curated/<dataset>/tables/``
    schema: dict[str, Any]  # Delta schema (``schemaString``), the partition column last
    files: list[StagedFile]


class StagedCommit(TypedDict):
    """What a run adds to the lake: per output, the files to commit in one transaction."""

    run_id: str
    dataset: str
    source_blob: str
    source_key: str
    contract_version: int
    tables: dict[str, StagedTable]  # output name (``clean``, ``aggregate:<name>``, ...) -> files


def tables(contract: Contract) -> dict[str, str]:
    """Output name -> table name. Aggregate tables carry their PostgreSQL twin's name."""
    out = {CLEAN: CLEAN}
    for agg in contract.aggregates:
        out[f"aggregate:{agg.name}"] = agg.table
        for m in agg.metrics:
            if m.op == "count_distinct":
                out[f"distinct:{agg.name}__{m.name}"] = f"{agg.table}__{m.name}"[:63]
    return out


def run_version(run_id: str) -> int:
    """The number a run's commits carry as their application transaction (``txn``) version,
    with the source key as the application id: equal numbers mean the same run. From a hash
    (56 bits), because a ``txn`` version is a signed 64-bit integer and a run id is text."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:7], "big") + 1


def removed_version() -> int:
    """The ``txn`` version of a source whose rows were removed (``forget``): never a run's."""
    return 0


_INTEGERS = {pl.Int8: "byte", pl.Int16: "short", pl.Int32: "integer", pl.Int64: "long"}


def delta_type(dtype: pl.DataType) -> str:
    """The Delta type of a polars column; unsigned and 128-bit integers have none."""
    base = dtype.base_type()
    if base in _INTEGERS:
        return _INTEGERS[base]
    if isinstance(dtype, pl.Decimal):
        return f"decimal({dtype.precision},{dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        return "timestamp" if dtype.time_zone else "timestamp_ntz"
    simple = {pl.Float64: "double", pl.Float32: "float", pl.Boolean: "boolean", pl.String: "string", pl.Date: "date"}
    if base in simple:
        return simple[base]
    raise ValueError(f"{dtype} has no Delta type: cast it before it reaches the lake")


def delta_schema(schema: pl.Schema | dict[str, pl.DataType]) -> dict[str, Any]:
    """A Delta ``schemaString`` for files of this polars schema, the partition column last."""
    fields = [{"name": n, "type": delta_type(t), "nullable": True, "metadata": {}} for n, t in schema.items()]
    fields.append({"name": PARTITION, "type": "string", "nullable": True, "metadata": {}})
    return {"type": "struct", "fields": fields}


def file_stats(path: Path) -> tuple[int, str]:
    """(rows, Delta ``add.stats`` JSON) of a Parquet file: row count, null counts, and min/max
    where a reader can prune with them safely. Timestamps are widened to whole milliseconds
    (the statistics' precision), decimals, floats and booleans get none, long strings none."""
    frame = pl.scan_parquet(path)
    schema = frame.collect_schema()
    ranged = [n for n, t in schema.items() if _ranged(t)]
    row = (
        frame.select(
            pl.len().alias("__rows"),
            *[pl.col(n).null_count().alias(f"nulls:{n}") for n in schema],
            *[pl.col(n).min().alias(f"min:{n}") for n in ranged],
            *[pl.col(n).max().alias(f"max:{n}") for n in ranged],
        )
        .collect()
        .row(0, named=True)
    )
    rows = int(row["__rows"])
    stats: dict[str, Any] = {"numRecords": rows, "nullCount": {n: int(row[f"nulls:{n}"]) for n in schema}}
    low = {n: v for n in ranged if (v := _bound(row[f"min:{n}"], up=False)) is not None}
    high = {n: v for n in ranged if (v := _bound(row[f"max:{n}"], up=True)) is not None}
    if low:
        stats["minValues"] = low
    if high:
        stats["maxValues"] = high
    return rows, json.dumps(stats, separators=(",", ":"))


def _ranged(dtype: pl.DataType) -> bool:
    zoned = isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    return dtype.base_type() in _INTEGERS or dtype.base_type() in (pl.String, pl.Date) or zoned


def _bound(value: Any, *, up: bool) -> Any:
    """A statistic as Delta's JSON writes it, or None where it would not be a safe bound."""
    if value is None:
        return None
    if isinstance(value, datetime):
        whole = value.replace(microsecond=value.microsecond // 1000 * 1000)
        if up and whole != value:
            whole += timedelta(milliseconds=1)
        return whole.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{whole.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return value if len(value) <= STATS_STRING_LIMIT else None
    return int(value)
