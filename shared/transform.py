"""The transform: one streaming polars pass from raw CSV chunks to every output of a file.

    chunks ─ scan (all text) ─ clean & type ─┬─ rejected ─ rejects.parquet (reason, column, raw text)
                                              └─ valid ─ first of its fingerprint? ─┬─ yes ─ clean.parquet
                                                                                   │         aggregates/*.parquet
                                                                                   └─ no ── counted as duplicate

One pass, one plan, several sinks: polars shares the scan and the cleaning between the
outputs, and nothing holds the whole file. De-duplication keeps a 128-bit fingerprint per
distinct row instead of the row itself (polars' ``unique()`` keeps every distinct row in
memory); with two independent 64-bit hashes the chance that two different rows of a file
share one is below 10^-20.

Nothing here touches Azure: the caller hands in chunk files and a folder to write to.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from shared.contract import Aggregate, Contract, Metric, normalise_header
from shared.faults import FileRefused
from shared.rules import INVALID_CODE, RAGGED_ROW, column_rules, dtype_of
from shared.source import Source

LINE = "_line"
EXTRA = "__extra"
ABSENT = "__absent"
OK = "__ok"
SEED_A, SEED_B = 0x5EED_0001, 0x5EED_0002


@dataclass
class Lineage:
    """Where a run's outputs come from; written into every Parquet file's metadata."""

    source_blob: str
    run_id: str
    etag: str = ""

    def metadata(self, contract: Contract) -> dict[str, str]:
        return {
            "pipeline.source_blob": self.source_blob,
            "pipeline.source_etag": self.etag,
            "pipeline.run_id": self.run_id,
            "pipeline.dataset": contract.dataset,
            "pipeline.contract_version": str(contract.version),
        }


@dataclass
class Outputs:
    clean: Path
    rejects: Path
    aggregates: dict[str, Path]
    distinct_values: dict[str, Path] = field(default_factory=dict)


@dataclass
class Result:
    rows_read: int
    rows_valid: int
    rows_rejected: int
    rows_duplicate: int
    groups: dict[str, int]
    rejects_by_reason: list[dict[str, Any]]
    columns: dict[str, dict[str, Any]]
    drift: dict[str, Any]
    outputs: Outputs
    seconds: float

    @property
    def balanced(self) -> bool:
        """Nothing lost, nothing doubled: every row read is valid, rejected or a duplicate."""
        return self.rows_read == self.rows_valid + self.rows_rejected + self.rows_duplicate


@dataclass
class Mapping:
    """How the file's header lines up with the contract."""

    positions: dict[str, int | None]  # contract column -> header position (None: absent, optional)
    extra: list[tuple[int, str]]  # header positions and names the contract does not know
    drift: dict[str, Any]


def map_header(contract: Contract, header: Sequence[str]) -> Mapping:
    """Match header names to contract columns ignoring case, spaces and a BOM; apply drift policy."""
    names = [normalise_header(h) for h in header]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n and n in seen:
            raise FileRefused(
                "unexpected_columns", f"the header names {header[i].strip()!r} twice (columns {seen[n] + 1} and {i + 1})"
            )
        seen.setdefault(n, i)
    positions: dict[str, int | None] = {}
    missing_required, missing_optional = [], []
    for col in contract.columns:
        pos = seen.get(normalise_header(col.source))
        positions[col.name] = pos
        if pos is None:
            (missing_required if col.required else missing_optional).append(col.source)
    if missing_required:
        raise FileRefused("missing_columns", f"required column(s) missing from the header: {', '.join(missing_required)}")
    if missing_optional and contract.drift.missing_optional == "reject_file":
        raise FileRefused(
            "missing_columns", f"optional column(s) missing and the contract refuses that: {', '.join(missing_optional)}"
        )
    known = {p for p in positions.values() if p is not None}
    extra = [(i, header[i].strip()) for i in range(len(header)) if i not in known and names[i]]
    if extra and contract.drift.extra_columns == "reject_file":
        raise FileRefused("unexpected_columns", f"column(s) not in the contract: {', '.join(n for _, n in extra)}")
    expected_order = sorted(known)
    drift: dict[str, Any] = {
        "extra_columns": [n for _, n in extra],
        "extra_columns_policy": contract.drift.extra_columns,
        "missing_optional_columns": missing_optional,
        "column_order_changed": [p for p in positions.values() if p is not None] != expected_order,
        "unnamed_columns": sum(1 for n in names if not n),
    }
    return Mapping(positions=positions, extra=extra, drift=drift)


def kept_name(name: str, taken: set[str]) -> str:
    """A safe column name for an extra column kept under the ``keep`` policy."""
    base = re.sub(r"[^a-z0-9_]+", "_", normalise_header(name)).strip("_") or "column"
    if not base[0].isalpha():
        base = f"c_{base}"
    base = f"extra_{base}"[:60]
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate)
    return candidate


def run(contract: Contract, source: Source, out_dir: Path, lineage: Lineage, *, zstd_level: int = 3) -> Result:
    """Clean, reject, de-duplicate and aggregate ``source`` into Parquet files under ``out_dir``."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    mapping = map_header(contract, source.header)
    width = len(source.header)
    raw_names = [f"__f{i}" for i in range(width)]
    scan = _scan(source, raw_names)

    # stage 1: cleaned text; stage 2: typed values; stage 3: does the row pass every rule?
    rules = {}
    stage1 = []
    for col in contract.columns:
        pos = mapping.positions[col.name]
        raw = raw_names[pos] if pos is not None else None
        rules[col.name] = column_rules(col, raw if raw is not None else ABSENT)
        stage1.append(rules[col.name].cleaned)
    keep_extra = contract.drift.extra_columns == "keep"
    taken = {c.name for c in contract.columns}
    kept = [(raw_names[i], kept_name(n, taken)) for i, n in mapping.extra] if keep_extra else []

    ragged = pl.col(EXTRA).is_not_null()
    checked = (
        scan.with_columns(stage1)
        .with_columns([rules[c.name].value for c in contract.columns])
        .with_columns((~ragged & pl.all_horizontal([rules[c.name].ok for c in contract.columns])).alias(OK))
        .cache()
    )
    meta = lineage.metadata(contract)
    lineage_cols = [pl.lit(lineage.source_blob).alias("_source_blob"), pl.lit(lineage.run_id).alias("_run_id")]

    # rejected rows: line, first broken rule, its column, and the raw text of every column
    reason = pl.when(ragged).then(pl.lit(RAGGED_ROW))
    column = pl.when(ragged).then(pl.lit(None, pl.String))
    for col in contract.columns:
        ok = rules[col.name].ok
        reason = reason.when(~ok).then(rules[col.name].reason)
        column = column.when(~ok).then(pl.lit(col.name))
    raw_text = [
        (pl.col(raw_names[p]) if p is not None else pl.lit(None, pl.String)).alias(name) for name, p in mapping.positions.items()
    ]
    rejects = checked.filter(~pl.col(OK)).select(
        pl.col(LINE).alias("line"),
        reason.alias("reason"),
        column.otherwise(pl.lit(None, pl.String)).alias("column"),
        *raw_text,
        *[pl.col(raw).alias(name) for raw, name in kept],
        pl.col(EXTRA).alias("extra_fields"),
        *lineage_cols,
    )

    # valid rows, first occurrence of each fingerprint kept
    names = [c.name for c in contract.columns]
    dedup = list(contract.dedup_columns)
    high = pl.struct(dedup).hash(SEED_A).cast(pl.UInt128) * pl.lit(1 << 64, pl.UInt128)
    fingerprint = high + pl.struct(*reversed(dedup)).hash(SEED_B).cast(pl.UInt128)
    valid = checked.filter(pl.col(OK)).select(LINE, *names, *[pl.col(raw).alias(name) for raw, name in kept])
    flagged = valid.with_columns(fingerprint.is_first_distinct().alias("__first")).cache()
    clean = flagged.filter(pl.col("__first")).drop("__first")
    clean_out = clean.with_columns(*lineage_cols)

    outputs = Outputs(clean=out_dir / "clean.parquet", rejects=out_dir / "rejects.parquet", aggregates={})
    sinks: list[pl.LazyFrame] = [
        clean_out.sink_parquet(outputs.clean, compression="zstd", compression_level=zstd_level, metadata=meta, lazy=True),
        rejects.sink_parquet(outputs.rejects, compression="zstd", compression_level=zstd_level, metadata=meta, lazy=True),
    ]
    counts = flagged.select(
        pl.len().alias("valid"),
        (~pl.col("__first")).sum().alias("duplicate"),
    )
    reasons = rejects.group_by("reason", "column").agg(pl.len().alias("rows"))
    stats = clean.select(_column_stats(contract))
    invalid = checked.select(
        pl.len().alias("read"),
        *[
            (pl.col(f"__clean_{c.name}").is_not_null() & pl.col(c.name).is_null()).sum().alias(f"invalid:{c.name}")
            for c in contract.columns
            if c.type != "string"
        ],
        *[
            pl.col(f"__clean_{c.name}").is_not_null().sum().alias(f"present:{c.name}")
            for c in contract.columns
            if c.type != "string"
        ],
    )
    agg_frames = [clean.group_by(_keys(agg, contract)).agg(_metrics(agg, contract)) for agg in contract.aggregates]
    distinct_frames, distinct_names = [], []
    for agg in contract.aggregates:
        for m in agg.metrics:
            if m.op == "count_distinct":
                distinct_frames.append(clean.select(*_keys(agg, contract), pl.col(m.column).alias("value")).unique())
                distinct_names.append(f"{agg.name}__{m.name}")

    try:
        results = pl.collect_all([*sinks, counts, reasons, stats, invalid, *agg_frames, *distinct_frames])
    except pl.exceptions.ComputeError as exc:
        if "utf-8" in str(exc).lower() or "utf8" in str(exc).lower():
            raise FileRefused(
                "undecodable", "the file is not valid UTF-8; set [csv] encoding in the contract if the feed uses another one"
            ) from None
        raise
    count_df, reason_df, stats_df, invalid_df = results[2:6]
    agg_dfs = results[6 : 6 + len(agg_frames)]
    distinct_dfs = results[6 + len(agg_frames) :]

    rows_read = int(invalid_df["read"][0])
    rows_valid = int(count_df["valid"][0])
    rows_duplicate = int(count_df["duplicate"][0] or 0)
    rows_rejected = rows_read - rows_valid
    _refuse_type_drift(contract, invalid_df)

    groups: dict[str, int] = {}
    for agg, df in zip(contract.aggregates, agg_dfs, strict=True):
        path = out_dir / f"aggregate-{agg.name}.parquet"
        df = df.sort([k.name for k in agg.keys]).with_columns(*lineage_cols)
        df.write_parquet(path, compression="zstd", metadata=meta)
        outputs.aggregates[agg.name] = path
        groups[agg.name] = df.height
    for name, df in zip(distinct_names, distinct_dfs, strict=True):
        path = out_dir / f"distinct-{name}.parquet"
        df.with_columns(*lineage_cols).write_parquet(path, compression="zstd", metadata=meta)
        outputs.distinct_values[name] = path

    by_reason = [
        {"reason": r["reason"], "column": r["column"], "rows": int(r["rows"])}
        for r in reason_df.sort("rows", "reason", "column", descending=[True, False, False], nulls_last=True).iter_rows(
            named=True
        )
    ]
    result = Result(
        rows_read=rows_read,
        rows_valid=rows_valid - rows_duplicate,
        rows_rejected=rows_rejected,
        rows_duplicate=rows_duplicate,
        groups=groups,
        rejects_by_reason=by_reason,
        columns=_stats_dict(contract, stats_df, rows_valid - rows_duplicate),
        drift=mapping.drift,
        outputs=outputs,
        seconds=time.perf_counter() - started,
    )
    if not result.balanced:  # pragma: no cover - a bug, never a data problem
        raise AssertionError(f"row accounting is off: {result}")
    return result


def _scan(source: Source, raw_names: list[str]) -> pl.LazyFrame:
    schema = dict.fromkeys([*raw_names, EXTRA], pl.String)
    if not source.chunks:
        return pl.LazyFrame(schema=schema).with_row_index(LINE, offset=2).with_columns(pl.lit(None, pl.String).alias(ABSENT))
    return (
        pl.scan_csv(
            [str(p) for p in source.chunks],
            has_header=False,
            separator=source.delimiter,
            quote_char=source.quote,
            eol_char=source.eol,
            schema=schema,
            missing_columns="insert",
            truncate_ragged_lines=True,
            raise_if_empty=False,
            encoding="utf8",
        )
        .with_row_index(LINE, offset=2)
        .with_columns(pl.lit(None, pl.String).alias(ABSENT))
    )


def _refuse_type_drift(contract: Contract, invalid: pl.DataFrame) -> None:
    """A column whose values mostly stop parsing means the feed changed: refuse the whole file
    rather than load a file's worth of rejects in place of its previous contribution."""
    limit = contract.drift.max_invalid_share
    for col in contract.columns:
        if col.type == "string":
            continue
        bad = int(invalid[f"invalid:{col.name}"][0] or 0)
        present = int(invalid[f"present:{col.name}"][0] or 0)
        if present >= 20 and bad > limit * present:
            raise FileRefused(
                "type_drift",
                f"{bad} of {present} values of {col.source!r} are not a valid {col.type} "
                f"({INVALID_CODE[col.type]}); the contract allows at most {limit:.0%}",
            )


def _keys(agg: Aggregate, contract: Contract) -> list[pl.Expr]:
    out = []
    for key in agg.keys:
        c = pl.col(key.column)
        kind = contract.column(key.column).type
        if key.bucket is None:
            out.append(c.alias(key.name))
        elif key.bucket == "hour":
            out.append(c.dt.truncate("1h").alias(key.name))
        elif key.bucket == "day":
            out.append((c.dt.date() if kind == "timestamp" else c).alias(key.name))
        else:
            every = {"week": "1w", "month": "1mo", "quarter": "1q", "year": "1y"}[key.bucket]
            truncated = c.dt.truncate(every)
            out.append((truncated.dt.date() if kind == "timestamp" else truncated).alias(key.name))
    return out


def _metrics(agg: Aggregate, contract: Contract) -> list[pl.Expr]:
    out: list[pl.Expr] = []
    for m in agg.metrics:
        out.extend(metric_exprs(m, contract))
    return out


def metric_exprs(m: Metric, contract: Contract) -> list[pl.Expr]:
    """Per-file metric columns. Sums of integers are exact (128-bit, stored as decimal(38,0));
    a mean is also carried as its sum and count so that files can be merged exactly."""
    if m.op == "count":
        return [(pl.col(m.column).count() if m.column else pl.len()).cast(pl.Int64).alias(m.name)]
    assert m.column is not None
    c = pl.col(m.column)
    kind = contract.column(m.column).type
    if m.op == "sum":
        return [_exact_sum(c, kind).alias(m.name)]
    if m.op == "min":
        return [c.min().alias(m.name)]
    if m.op == "max":
        return [c.max().alias(m.name)]
    if m.op == "mean":
        return [
            c.mean().cast(pl.Float64).alias(m.name),
            _exact_sum(c, kind).alias(f"{m.name}__sum"),
            c.count().cast(pl.Int64).alias(f"{m.name}__count"),
        ]
    if m.op == "count_distinct":
        return [c.n_unique().cast(pl.Int64).alias(m.name)]
    raise ValueError(m.op)


def _exact_sum(c: pl.Expr, kind: str) -> pl.Expr:
    if kind == "integer":
        return c.cast(pl.Int128).sum().cast(pl.Decimal(38, 0))
    if kind == "decimal":
        return c.sum()
    return c.sum().cast(pl.Float64)


def _column_stats(contract: Contract) -> list[pl.Expr]:
    exprs = []
    for col in contract.columns:
        c = pl.col(col.name)
        exprs.append(c.null_count().alias(f"nulls:{col.name}"))
        if col.type not in ("boolean",):
            exprs.append(c.min().alias(f"min:{col.name}"))
            exprs.append(c.max().alias(f"max:{col.name}"))
    return exprs


def _stats_dict(contract: Contract, stats: pl.DataFrame, rows: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    row = stats.row(0, named=True) if stats.height else {}
    for col in contract.columns:
        nulls = int(row.get(f"nulls:{col.name}") or 0)
        entry: dict[str, Any] = {
            "type": col.type if col.type != "decimal" else f"decimal({col.scale})",
            "nulls": nulls,
            "null_rate": round(nulls / rows, 6) if rows else 0.0,
        }
        if col.type != "boolean":
            entry["min"] = _jsonable(row.get(f"min:{col.name}"))
            entry["max"] = _jsonable(row.get(f"max:{col.name}"))
        out[col.name] = entry
    return out


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value) if not hasattr(value, "isoformat") else value.isoformat()


def output_dtypes(contract: Contract) -> dict[str, pl.DataType]:
    return {c.name: dtype_of(c) for c in contract.columns}
