"""The loading benchmark: an aggregate-shaped frame into PostgreSQL, the loader's way and the others'.

The frame has the real table shape (``shared.postgres.warehouse.aggregate_table`` of the bank contract:
date, text, text, numeric(38,0), numeric(38,0), bigint) and the polars types the transform
writes (Date, String, Decimal(38, 0), Int64). The other methods load into one UNLOGGED table of
a throwaway database, truncated (untimed) before each run; the runs are interleaved:

* ``copy_rows``: the pipeline's own path, the loader's staging step ``shared.postgres.replace.stage``
  (a temp table, then ``copy_rows`` of the frame, binary COPY), in a transaction, as
  ``Loader.load`` calls it; with a loader that has no ``stage``, ``copy_rows`` of the rows;
* ``psql_copy``: ``psql -c "\\copy ... FROM file WITH (FORMAT csv)"``, the CSV written beforehand;
  the time is the psql process's, connection included;
* ``psql_copy_logged`` (for reference): the same ``\\copy`` into a logged table shaped like the
  target (the loader's source, run and load-time columns, the index on the source), the like-for-
  like yardstick for the whole loader, which writes WAL and maintains that index too;
* ``executemany``: psycopg ``executemany`` of an INSERT over the first 100k rows, extrapolated
  to rows/s;
* ``copy_csv_stream`` (for reference): psycopg ``COPY FROM STDIN (FORMAT csv)`` fed the same
  CSV file in 1 MiB blocks, i.e. what a loader that streams bytes instead of rows could do;
* ``loader`` (for reference): the whole ``shared.app.load.Loader.load()`` of a run whose aggregate
  Parquet holds the frame: read the Parquet from a ``FolderStore``, COPY into a temp table,
  lock, DELETE + INSERT into the real (logged, indexed) table, ledger row, commit, prune.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common, measure
from bench.pg import throwaway_database

EXECUTEMANY_ROWS = 100_000
TABLE = "bench_daily"


def aggregate_frame(rows: int, seed: int = 11) -> Any:
    """``rows`` distinct (date, domain, location) groups with exact metrics, deterministic."""
    import numpy as np
    import polars as pl

    from shared.tools.samples import CITIES, DOMAINS

    rng = np.random.default_rng(seed)
    i = pl.int_range(0, rows, eager=True, dtype=pl.Int64)
    per_day = len(DOMAINS) * len(CITIES)
    days = pl.DataFrame({"d": i // per_day}).select(
        (pl.lit(dt.date(2000, 1, 1)) + pl.duration(days=pl.col("d"))).cast(pl.Date).alias("txn_date")
    )
    return days.with_columns(
        pl.Series(DOMAINS).gather((i // len(CITIES)) % len(DOMAINS)).alias("domain"),
        pl.Series(CITIES).gather(i % len(CITIES)).alias("location"),
        pl.Series(rng.integers(1_000, 10**10, rows)).cast(pl.Decimal(38, 0)).alias("total_value"),
        pl.Series(rng.integers(1, 10**6, rows)).cast(pl.Decimal(38, 0)).alias("transaction_count"),
        pl.Series(rng.integers(1, 5_000, rows)).alias("record_count"),
    )


def bench(rows: int, repeat: int, settle: float | None = None) -> dict[str, Any]:
    import psycopg
    from psycopg import sql

    from shared.app import settings
    from shared.app.load import Loader
    from shared.core import documents, layout, manifest
    from shared.core.contract import load_contracts
    from shared.core.layout import BlobInfo
    from shared.postgres import replace as pipeline_replace
    from shared.postgres import warehouse
    from shared.postgres.replace import copy_rows
    from shared.storage.blobs import FolderStore

    contracts = load_contracts(settings.contracts_dir())
    contract = contracts["bank_transactions"]
    shape = warehouse.aggregate_table(contract, contract.aggregates[0])
    names = [n for n, _ in shape.columns]
    frame = aggregate_frame(rows).select(names)
    notes: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="bench-load-", dir=common.DATA_DIR if common.DATA_DIR.exists() else None))
    csv_path = scratch / "aggregates.csv"
    frame.write_csv(csv_path)
    have_psql = measure.have("psql")
    if not have_psql:
        notes.append("psql is not installed: no psql \\copy figure (apt-get install postgresql-client)")

    with throwaway_database("bench_load") as dsn:
        conn = psycopg.connect(dsn, autocommit=True)
        server = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        table = sql.Identifier(TABLE)
        cols = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in shape.columns)
        conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(table, cols))
        # the fair reference for the whole loader: a logged table shaped like the target, with
        # its source column (filled by a default here) and its index on that column
        logged = sql.Identifier(TABLE + "_logged")
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} ({}, {} text NOT NULL DEFAULT 'psql', {} text NOT NULL DEFAULT 'psql',"
                " {} timestamptz NOT NULL DEFAULT now())"
            ).format(
                logged,
                cols,
                sql.Identifier(warehouse.SOURCE_COL),
                sql.Identifier(warehouse.RUN_COL),
                sql.Identifier(warehouse.LOADED_COL),
            )
        )
        conn.execute(sql.SQL("CREATE INDEX ON {} ({})").format(logged, sql.Identifier(warehouse.SOURCE_COL)))
        column_list = ", ".join(f'"{n}"' for n in names)
        stage_fn = getattr(pipeline_replace, "stage", None)
        timing: dict[str, Any] = {}

        def count() -> int:
            return int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0])

        def m_copy_rows() -> int:
            """The loader's staging step as ``Loader.load`` calls it: ``stage`` (temp table, then
            ``copy_rows`` of the frame); with an older loader, ``copy_rows`` of the rows into our table."""
            if stage_fn is not None:
                with conn.transaction():
                    started = time.perf_counter()
                    stage = stage_fn(conn, shape, frame)
                    timing["staged"] = time.perf_counter() - started
                    timing["count"] = int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(stage)).fetchone()[0])
                return rows
            with conn.transaction():
                copy_rows(conn, table, shape.columns, frame.iter_rows())
            return rows

        def psql_copy(into: str) -> int:
            cmd = f"\\copy {into} ({column_list}) FROM '{csv_path}' WITH (FORMAT csv, HEADER true)"
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", cmd], check=True, capture_output=True)
            return rows

        def m_executemany() -> int:
            n = min(rows, EXECUTEMANY_ROWS)
            query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                table, sql.SQL(", ").join(map(sql.Identifier, names)), sql.SQL(", ").join(sql.Placeholder() * len(names))
            )
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(query, frame.head(n).iter_rows())
            return n

        def m_copy_csv() -> int:
            statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
                table, sql.SQL(", ").join(map(sql.Identifier, names))
            )
            with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy, open(csv_path, "rb") as fh:
                while block := fh.read(1 << 20):
                    copy.write(block)
            return rows

        # the whole loader: a run's aggregate Parquet in a FolderStore, and its manifest
        store = FolderStore(scratch / "store")
        loader_conn = psycopg.connect(dsn, autocommit=True)
        loader = Loader(lambda: loader_conn, store, contracts, "pipeline")
        loader.prepare(loader_conn, contract)  # DDL once, untimed (a warm instance has done it)
        by_file = sql.SQL("{}.{}").format(sql.Identifier(shape.schema), sql.Identifier(shape.table))
        loader_runs = {"n": 0}

        def loader_request() -> dict[str, Any]:
            loader_runs["n"] += 1
            blob = f"bank_transactions/load-bench-{loader_runs['n']}.csv"
            run_id = layout.new_run_id()
            paths = layout.run_paths(blob, run_id, "bank_transactions")
            local = scratch / "daily.parquet"
            if not local.exists():
                import polars as pl

                frame.with_columns(pl.lit(blob).alias("_source_blob"), pl.lit(run_id).alias("_run_id")).write_parquet(
                    local, compression="zstd"
                )
            store.upload_file(*paths.aggregate("daily"), local)
            info = BlobInfo("raw", blob, f"0x{loader_runs['n']:x}", dt.datetime.now(dt.UTC), 0)
            doc = manifest.succeeded(
                info=info, paths=paths, contract_version=contract.version,
                counts={"rows_read": rows, "rows_valid": rows, "rows_rejected": 0, "rows_duplicate": 0,
                        "groups": {"daily": rows}},
                outputs={"aggregates": {"daily": manifest.blob_ref(paths.aggregate("daily"))}, "distinct_values": {}},
                quality={}, source_format={}, timings={},
            )  # fmt: skip
            return documents.parse_load_request(documents.load_request(doc))

        pending: dict[str, Any] = {}

        def m_loader() -> int:
            outcome = loader.load(pending["request"])
            if outcome.status != "loaded":
                raise RuntimeError(f"Loader.load said {outcome.status}: {outcome.detail}")
            return rows

        methods: dict[str, tuple[str, Callable[[], int]]] = {
            "copy_rows": (
                "**pipeline: `shared.postgres.replace.stage` → `copy_rows`** (binary COPY into the loader's temp table)"
                if stage_fn is not None
                else "**pipeline: `shared.postgres.replace.copy_rows`** (binary COPY, row by row)",
                m_copy_rows,
            ),
        }
        if have_psql:
            methods["psql_copy"] = ("`psql \\copy` from a CSV file", lambda: psql_copy(TABLE))
            methods["psql_copy_logged"] = (
                "reference: `psql \\copy` from the CSV file into a logged table shaped like the target (its source "
                "column and index)",
                lambda: psql_copy(TABLE + "_logged"),
            )
        many_label = f" ({EXECUTEMANY_ROWS:,} rows, rows/s extrapolated)" if rows > EXECUTEMANY_ROWS else ""
        methods["executemany"] = (f"psycopg `executemany` INSERT{many_label}", m_executemany)
        methods["copy_csv_stream"] = ("reference: psycopg `COPY FROM STDIN (FORMAT csv)` streaming the CSV file", m_copy_csv)
        methods["loader"] = (
            "reference: the whole `Loader.load()` (Parquet → temp table → DELETE + INSERT into the logged, "
            "indexed table → ledger)",
            m_loader,
        )
        seconds: dict[str, list[float]] = {k: [] for k in methods}
        busy: list[float | None] = []
        loaded: dict[str, int] = {}
        keys = list(methods)
        for r in range(repeat):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                conn.execute(sql.SQL("TRUNCATE {}").format(table))
                conn.execute(sql.SQL("TRUNCATE {}").format(logged))
                conn.execute(sql.SQL("TRUNCATE {}").format(by_file))
                conn.execute("TRUNCATE pipeline.ledger")
                conn.execute("CHECKPOINT")
                if key == "loader":
                    pending["request"] = loader_request()
                if settle is not None:
                    busy.append(common.settle(settle))
                started = time.perf_counter()
                n = methods[key][1]()
                took = time.perf_counter() - started
                if key == "copy_rows" and "staged" in timing:
                    took, got = timing.pop("staged"), timing.pop("count")  # timed inside; the temp table is gone
                elif key == "loader":
                    got = int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(by_file)).fetchone()[0])
                elif key == "psql_copy_logged":
                    got = int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(logged)).fetchone()[0])
                else:
                    got = count()
                if got != n:
                    raise RuntimeError(f"{key} loaded {got:,} rows, expected {n:,}")
                seconds[key].append(took)
                loaded[key] = n
                common.log(f"  load {key:<16} {n:>9,} rows in {took:6.3f} s = {n / took:>12,.0f} rows/s")
        loader_conn.close()
        conn.close()
    for p in sorted(scratch.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    scratch.rmdir()

    out: dict[str, Any] = {}
    for key, (label, _) in methods.items():
        s = common.median(seconds[key])
        out[key] = {"label": label, "rows": loaded[key], "seconds": s, "rows_per_s": loaded[key] / s, "samples": seconds[key]}
    notes.append(
        "psql, executemany and the CSV stream load one UNLOGGED table; the pipeline's staging step loads its own "
        "temporary table (`CREATE TEMP TABLE ... ON COMMIT DROP`, as the loader does; no WAL either), timed from "
        "`stage()` to its return; `Loader.load()` writes the contract's real tables. Every run starts from a "
        "truncated table after a CHECKPOINT; the server is on the same machine (no network)"
    )
    shares = [b for b in busy if b is not None]
    if shares:
        notes.append(
            f"Other work on the machine just before each run: median {common.median(shares):.0%}, "
            f"max {max(shares):.0%} of the CPU"
        )
    if rows > EXECUTEMANY_ROWS:
        notes.append(f"executemany is timed on the first {EXECUTEMANY_ROWS:,} rows and its rows/s extrapolated")
    return {
        "kind": "load",
        "rows": rows,
        "repeat": repeat,
        "server_version": server,
        "methods": out,
        "notes": notes,
        **common.stamp(),
    }
