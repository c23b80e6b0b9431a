"""The contenders of the transform benchmark: the same job, done by the pipeline and by the obvious tools.

Run one in a child process (that is how ``bench.run`` measures it):

    python -m bench.contenders <name> <input.csv> <outdir>

It prints one JSON line: the seconds of the work itself (imports and interpreter start
excluded; the parent measures those too), where its aggregates are, and what it knows.

The job, for every contender: read the seed-shaped CSV as text; clean it by the rules of
``contracts/bank_transactions.toml`` (trim every field, an empty field is missing; ``Date``
is ``m/d/yyyy`` or ``yyyy-mm-dd`` with a year of at least 1000; ``Domain`` upper-cased;
``Value`` an integer ≥ 0; ``Transaction_count`` an integer ≥ 1; a row with any missing or
invalid field is dropped); keep each distinct cleaned row once; group by (date, domain,
location) with the sum of values, the sum of counts and the number of rows; write Parquet.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASET = "bank_transactions"
AGGREGATES = "aggregates.parquet"
INTEGER = "[+-]?[0-9]+"  # what polars' strict=False cast of a trimmed string to Int64 accepts
WHITESPACE = " \t\n\r\x0b\x0c\u00a0"  # polars' strip_chars() strips all Unicode whitespace; these are the usual ones


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    what: str
    needs: tuple[str, ...] = ("polars",)
    reference: bool = False  # measured for scale only: not the same job, no aggregates
    max_rows: int | None = None


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender(
            "pipeline",
            "pipeline (shared.app.ingest)",
            "the Function's own code path, `shared.app.ingest.ingest()` on a `FolderStore`: split into chunks, clean, reject "
            "with reasons, de-duplicate, aggregate, and write every output (clean Parquet, rejects, aggregates, "
            "HTML report, manifest)",
        ),
        Contender(
            "polars_obvious",
            "polars obvious",
            "`scan_csv` (all strings) → the contract's cleaning → `unique()` → `group_by` → `sink_parquet`",
        ),
        Contender(
            "polars_categorical",
            "polars, Categorical",
            "the same with `Domain` and `Location` cast to `Categorical` before `unique()`",
        ),
        Contender(
            "duckdb",
            "DuckDB",
            "`read_csv(all_varchar)` → the same cleaning in SQL (`trim`, `upper`, `try_strptime`, `TRY_CAST`) → "
            "`DISTINCT` → `GROUP BY` → `COPY TO` Parquet",
            needs=("duckdb",),
        ),
        Contender(
            "duckdb_256mb",
            "DuckDB, 256 MB",
            "the same with `SET memory_limit='256MB'` and `threads=2` (spills to a temp folder)",
            needs=("duckdb",),
        ),
        Contender(
            "pandas",
            "pandas",
            "`read_csv(dtype=str)` → the same cleaning → `drop_duplicates` → `groupby` → `to_parquet` (pyarrow)",
            needs=("pandas", "pyarrow"),
            max_rows=10_000_000,
        ),
        Contender(
            "polars_count",
            "parse floor (polars count)",
            "`scan_csv(...).select(pl.len())`: reads the file and counts rows, nothing else (for scale)",
            reference=True,
        ),
    )
}


def available(name: str) -> str | None:
    """None when the contender can run here, else why not."""
    import importlib.util

    missing = [m for m in CONTENDERS[name].needs if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(missing)} (pip install -r bench/requirements.txt)" if missing else None


# --- set-up done by the parent before the clock starts -------------------------------------------


def blob_name(input_path: Path) -> str:
    return f"{DATASET}/{input_path.name}"


def prepare(name: str, input_path: Path, outdir: Path) -> None:
    """Untimed set-up: the pipeline finds the file already in its raw container (a hard link)."""
    outdir.mkdir(parents=True, exist_ok=True)
    if name == "pipeline":
        target = outdir / "store" / "raw" / blob_name(input_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(input_path, target)
        except OSError:
            shutil.copyfile(input_path, target)


def aggregates_path(name: str, outdir: Path) -> Path | None:
    if CONTENDERS[name].reference:
        return None
    if name == "pipeline":
        # the run's staged file in the source's partition of the lake's aggregate table
        table = outdir / "store" / "curated" / DATASET / "tables" / "bank_transactions_daily_by_file"
        found = sorted(table.glob("_source_key=*/*.parquet"))
        return found[-1] if found else None
    return outdir / AGGREGATES


def input_in_outdir(name: str, input_path: Path, outdir: Path) -> Path | None:
    """The copy of the input a contender was handed (not counted as bytes it wrote)."""
    return outdir / "store" / "raw" / blob_name(input_path) if name == "pipeline" else None


# --- the contenders ----------------------------------------------------------------------------


def run_pipeline(input_path: Path, outdir: Path) -> dict[str, Any]:
    from shared.app import settings
    from shared.app.ingest import ingest
    from shared.core.contract import load_contracts
    from shared.storage.blobs import FolderStore

    contracts = load_contracts(settings.contracts_dir())
    work = outdir / "work"
    work.mkdir(parents=True, exist_ok=True)
    doc = ingest(FolderStore(outdir / "store"), blob_name(input_path), contracts, work_dir=work)
    if doc["status"] != "succeeded":
        raise RuntimeError(f"the pipeline refused the file: {doc.get('error')}")
    return {"counts": doc["counts"], "timings": doc["timings"], "outputs": sorted(_names(doc["outputs"]))}


def _names(outputs: dict[str, Any]) -> list[str]:
    out = []
    for key, ref in outputs.items():
        if isinstance(ref, dict) and "container" in ref:
            out.append(key)
        elif isinstance(ref, dict):
            out.extend(f"{key}:{k}" for k in ref)
    return out


def _polars_clean(path: Path) -> Any:
    """The contract's cleaning, written by hand as a polars user would."""
    import polars as pl

    def text(column: str) -> pl.Expr:
        stripped = pl.col(column).str.strip_chars()
        return pl.when(stripped.str.len_bytes() > 0).then(stripped)

    date = text("Date")
    parsed = pl.coalesce(date.str.to_date("%m/%d/%Y", strict=False), date.str.to_date("%Y-%m-%d", strict=False))
    return (
        pl.scan_csv(path, infer_schema=False)
        .select(
            pl.when(parsed.dt.year() >= 1000).then(parsed).alias("txn_date"),  # chrono's %Y also reads "22"
            text("Domain").str.to_uppercase().alias("domain"),
            text("Location").alias("location"),
            text("Value").cast(pl.Int64, strict=False).alias("value"),
            text("Transaction_count").cast(pl.Int64, strict=False).alias("transaction_count"),
        )
        .filter(pl.all_horizontal(pl.all().is_not_null()), pl.col("value") >= 0, pl.col("transaction_count") >= 1)
    )


def _polars_aggregate(lf: Any, out: Path) -> None:
    import polars as pl

    (
        lf.unique()
        .group_by("txn_date", "domain", "location")
        .agg(
            pl.col("value").sum().alias("total_value"),
            pl.col("transaction_count").sum().alias("transaction_count"),
            pl.len().alias("record_count"),
        )
        .sink_parquet(out, compression="zstd")
    )


def run_polars_obvious(input_path: Path, outdir: Path) -> dict[str, Any]:
    _polars_aggregate(_polars_clean(input_path), outdir / AGGREGATES)
    return {}


def run_polars_categorical(input_path: Path, outdir: Path) -> dict[str, Any]:
    import polars as pl

    lf = _polars_clean(input_path).with_columns(pl.col("domain", "location").cast(pl.Categorical))
    _polars_aggregate(lf, outdir / AGGREGATES)
    return {}


def _sql_text(column: str) -> str:
    return f"NULLIF(trim(\"{column}\", '{WHITESPACE}'), '')"


def duckdb_query(input_path: Path, out: Path) -> str:
    """The job as one DuckDB statement."""
    columns = ", ".join(f"'{c}': 'VARCHAR'" for c in ("Date", "Domain", "Location", "Value", "Transaction_count"))
    src = str(input_path).replace("'", "''")
    dst = str(out).replace("'", "''")
    return f"""
    COPY (
        WITH cleaned AS (
            SELECT {_sql_text("Date")} AS d, upper({_sql_text("Domain")}) AS domain, {_sql_text("Location")} AS location,
                   {_sql_text("Value")} AS v, {_sql_text("Transaction_count")} AS n
            FROM read_csv('{src}', header = true, delim = ',', quote = '"', auto_detect = false, columns = {{{columns}}})
        ),
        typed AS (
            SELECT coalesce(try_strptime(d, '%m/%d/%Y'), try_strptime(d, '%Y-%m-%d'))::DATE AS txn_date, domain, location,
                   CASE WHEN regexp_full_match(v, '{INTEGER}') THEN TRY_CAST(v AS BIGINT) END AS value,
                   CASE WHEN regexp_full_match(n, '{INTEGER}') THEN TRY_CAST(n AS BIGINT) END AS transaction_count
            FROM cleaned
        ),
        valid AS (
            SELECT DISTINCT txn_date, domain, location, value, transaction_count FROM typed
            WHERE txn_date IS NOT NULL AND year(txn_date) >= 1000 AND domain IS NOT NULL AND location IS NOT NULL
              AND value >= 0 AND transaction_count >= 1
        )
        SELECT txn_date, domain, location,
               sum(value)::DECIMAL(38, 0) AS total_value,
               sum(transaction_count)::DECIMAL(38, 0) AS transaction_count,
               count(*)::BIGINT AS record_count
        FROM valid GROUP BY txn_date, domain, location
    ) TO '{dst}' (FORMAT parquet, COMPRESSION zstd)
    """


def _duckdb(input_path: Path, outdir: Path, settings: dict[str, str]) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(":memory:")
    spill = outdir / "duckdb.tmp"
    con.execute(f"SET temp_directory = '{str(spill).replace(chr(39), chr(39) * 2)}'")
    for key, value in settings.items():
        con.execute(f"SET {key} = {value}")
    con.execute(duckdb_query(input_path, outdir / AGGREGATES))
    con.close()
    return {"settings": settings}


def run_duckdb(input_path: Path, outdir: Path) -> dict[str, Any]:
    return _duckdb(input_path, outdir, {})


def run_duckdb_256mb(input_path: Path, outdir: Path) -> dict[str, Any]:
    return _duckdb(input_path, outdir, {"memory_limit": "'256MB'", "threads": "2"})


def run_pandas(input_path: Path, outdir: Path) -> dict[str, Any]:
    import pandas as pd

    df = pd.read_csv(input_path, dtype=str, keep_default_na=False, na_values=[""])

    def text(column: pd.Series) -> pd.Series:
        s = column.str.strip()
        return s.mask(s == "")

    def integer(column: pd.Series) -> pd.Series:
        s = text(column)
        ok = s.str.fullmatch(INTEGER).fillna(False).astype(bool)
        short = ok & (s.str.lstrip("+-").str.lstrip("0").str.len().fillna(99) <= 18)  # surely within int64
        # through Arrow, exactly (a float detour would round values past 2^53)
        values = s.where(short).str.removeprefix("+").astype("int64[pyarrow]")
        long = ok & ~short
        if long.any():  # 19+ digits: in range or not, as polars decides (null when it overflows)
            values.loc[long] = [v if -(2**63) <= (v := int(t)) < 2**63 else None for t in s[long]]
        return values

    date = text(df["Date"])
    parsed = pd.to_datetime(date, format="%m/%d/%Y", errors="coerce")
    parsed = parsed.fillna(pd.to_datetime(date, format="%Y-%m-%d", errors="coerce"))
    clean = pd.DataFrame(
        {
            "txn_date": parsed.where(parsed.dt.year >= 1000),
            "domain": text(df["Domain"]).str.upper(),
            "location": text(df["Location"]),
            "value": integer(df["Value"]),
            "transaction_count": integer(df["Transaction_count"]),
        }
    )
    del df
    keep = clean.notna().all(axis=1) & (clean["value"] >= 0).fillna(False) & (clean["transaction_count"] >= 1).fillna(False)
    clean = clean[keep.astype(bool)].drop_duplicates()
    agg = (
        clean.groupby(["txn_date", "domain", "location"], sort=False, observed=True)
        .agg(
            total_value=("value", "sum"),
            transaction_count=("transaction_count", "sum"),
            record_count=("value", "size"),
        )
        .reset_index()
    )
    agg.to_parquet(outdir / AGGREGATES, index=False, compression="zstd")
    return {}


def run_polars_count(input_path: Path, outdir: Path) -> dict[str, Any]:
    import polars as pl

    rows = pl.scan_csv(input_path, infer_schema=False).select(pl.len()).collect().item()
    return {"rows": int(rows)}


RUN: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
    "pipeline": run_pipeline,
    "polars_obvious": run_polars_obvious,
    "polars_categorical": run_polars_categorical,
    "duckdb": run_duckdb,
    "duckdb_256mb": run_duckdb_256mb,
    "pandas": run_pandas,
    "polars_count": run_polars_count,
}


class MemorySampler(threading.Thread):
    """Samples this process's ``/proc/self/status`` every ``interval`` s and keeps the peaks of its
    anonymous and file-backed resident memory. ``ru_maxrss`` counts both, and a memory-mapped
    input (polars maps CSV files) is file-backed: page cache the kernel can drop, not heap."""

    FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(name="memory-sampler", daemon=True)
        self.interval = interval
        self.peaks_kib = dict.fromkeys(self.FIELDS, 0)
        self.done = threading.Event()

    def sample(self) -> None:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    key, _, value = line.partition(":")
                    if key in self.peaks_kib:
                        self.peaks_kib[key] = max(self.peaks_kib[key], int(value.split()[0]))
        except (OSError, ValueError, IndexError):
            pass

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.join()
        self.sample()
        return {k: v / 1024 for k, v in self.peaks_kib.items()}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in RUN:
        print(f"usage: python -m bench.contenders {{{','.join(RUN)}}} <input.csv> <outdir>", file=sys.stderr)
        return 2
    name, input_path, outdir = argv[0], Path(argv[1]).resolve(), Path(argv[2]).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    sampler = MemorySampler()
    sampler.start()
    started = time.perf_counter()
    extra = RUN[name](input_path, outdir)
    seconds = time.perf_counter() - started
    memory = sampler.stop()
    print(json.dumps({"contender": name, "work_seconds": seconds, "memory_mib": memory, **extra}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
