"""What the lake costs an ingest: one file's rows into curated as Delta tables, against plain Parquet.

    python -m bench.run --only lake                       # 1M and 10M rows, 3 interleaved rounds
    python -m bench.lake <writer> <input.csv> <outdir>    # one measured child (what the harness runs)

Three writers, each in its own child process on the same generated file, interleaved, measured
as the transform benchmark measures (wall from the parent, peak RSS from ``/usr/bin/time``):

    parquet    the transform, then its Parquet files copied into curated as they are, with the
               report and the manifest: the pipeline before the lake (the files main wrote)
    delta      this pipeline: ``shared.app.ingest`` (the same files, staged in the source's
               partition of each Delta table, with their statistics and the staged commit),
               then the loader's commits (``shared.storage.lake.publish``, one per table)
    delta_rs   the transform, then delta-rs's own writer (``write_deltalake`` with a partition
               predicate) re-encoding the clean rows and the aggregates: what "use the Delta
               writer" would be without staging

Storage is a local folder and the tables are local Delta tables (delta-rs on ``file://``), so
the figures compare the writers' CPU and memory, not Azurite's. Every writer's tables or files
are read back and their row counts compared, or the run fails.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import common, measure

WRITERS = ("parquet", "delta", "delta_rs")
DATASET = "bank_transactions"


def _contracts() -> Any:
    from shared.app import settings
    from shared.core.contract import load_contracts

    return load_contracts(settings.contracts_dir())


def _prepare(input_path: Path, outdir: Path) -> str:
    blob = f"{DATASET}/{input_path.name}"
    target = outdir / "store" / "raw" / blob
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(input_path, target)
    except OSError:
        shutil.copyfile(input_path, target)
    return blob


def _transform(store: Any, blob: str, contract: Any, scratch: Path) -> tuple[Any, Any, Any]:
    from shared.app import settings
    from shared.core import layout, source, transform

    info, blocks = store.open_blocks(layout.RAW, blob)
    src = source.open_source(
        blocks, delimiter=contract.dialect.delimiter, quote=contract.dialect.quote,
        encoding=contract.dialect.encoding, chunk_bytes=settings.chunk_bytes(),
    )  # fmt: skip
    paths = layout.run_paths(blob, layout.new_run_id(), DATASET)
    result = transform.run(contract, src, scratch, transform.Lineage(blob, paths.run_id, info.etag))
    return info, paths, result


def write_parquet(store: Any, blob: str, outdir: Path) -> dict[str, Any]:
    """What main wrote: the transform's files under run-specific names, report, manifest."""
    from shared.core import layout, report

    contract = _contracts()[DATASET]
    _, paths, result = _transform(store, blob, contract, outdir / "work")
    prefix = f"{DATASET}/clean/{paths.source_key}/{paths.run_id}/"
    for i, part in enumerate(result.outputs.clean_parts):
        store.upload_file(layout.CURATED, f"{prefix}{paths.run_id}.part-{i:05d}.parquet", part)
    for name, path in result.outputs.aggregates.items():
        store.upload_file(*paths.aggregate(name), path)
    store.upload_file(*paths.rejects, result.outputs.rejects)
    doc = {"run_id": paths.run_id, "dataset": DATASET, "source": {"blob": blob}, "counts": {"rows_valid": result.rows_valid}}
    doc |= {"status": "succeeded", "outputs": {}, "quality": {}, "format": {}}
    doc["counts"] |= {
        "rows_read": result.rows_read,
        "rows_rejected": result.rows_rejected,
        "rows_duplicate": result.rows_duplicate,
    }
    store.upload_bytes(*paths.report, report.html_report(doc).encode())
    store.upload_bytes(*paths.manifest, json.dumps(doc, default=str).encode())
    clean = outdir / "store" / layout.CURATED / prefix
    return {"rows": _parquet_rows(sorted(clean.glob("*.parquet"))), "valid": result.rows_valid}


def write_delta(store: Any, blob: str, outdir: Path) -> dict[str, Any]:
    """This pipeline: ingest (staging), then the loader's commit of every table."""
    from shared.app.ingest import ingest
    from shared.core import layout
    from shared.storage import lake

    contracts = _contracts()
    work = outdir / "work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    doc = ingest(store, blob, contracts, work_dir=work)
    staged_at = time.perf_counter()
    commit = json.loads(store.read_bytes(*layout.run_paths(blob, doc["run_id"], DATASET).lake_commit))
    for table in commit["tables"].values():
        uri = str(outdir / "store" / layout.CURATED / layout.table_path(DATASET, table["table"]))
        lake.publish(
            uri, {}, table, source_key=commit["source_key"], version=1,
            metadata={"pipeline.run_id": doc["run_id"]}, name=table["table"],
        )  # fmt: skip
    committed = time.perf_counter()
    clean = outdir / "store" / layout.CURATED / layout.table_path(DATASET, "clean")
    return {
        "rows": _delta_rows(clean),
        "valid": doc["counts"]["rows_valid"],
        "ingest_seconds": staged_at - started,
        "commit_seconds": committed - staged_at,
    }


def write_delta_rs(store: Any, blob: str, outdir: Path) -> dict[str, Any]:
    """The transform, then delta-rs's writer re-encoding every row (a polars user's write_delta)."""
    import polars as pl
    from deltalake import write_deltalake

    from shared.core import layout

    contract = _contracts()[DATASET]
    _, paths, result = _transform(store, blob, contract, outdir / "work")
    key = pl.lit(paths.source_key).alias("_source_key")
    tables = {"clean": result.outputs.clean_parts, **{a.table: [result.outputs.aggregates[a.name]] for a in contract.aggregates}}
    for table, files in tables.items():
        uri = str(outdir / "store" / layout.CURATED / layout.table_path(DATASET, table))
        frame = pl.scan_parquet(files).with_columns(key).collect()
        write_deltalake(
            uri, frame, mode="overwrite", predicate=f"_source_key = '{paths.source_key}'", partition_by=["_source_key"],
        )  # fmt: skip
        del frame
    clean = outdir / "store" / layout.CURATED / layout.table_path(DATASET, "clean")
    return {"rows": _delta_rows(clean), "valid": result.rows_valid}


def _parquet_rows(files: list[Path]) -> int:
    import polars as pl

    return int(pl.scan_parquet(files).select(pl.len()).collect().item())


def _delta_rows(uri: Path) -> int:
    import polars as pl

    return int(pl.scan_delta(str(uri)).select(pl.len()).collect().item())


def child(writer: str, input_path: Path, outdir: Path) -> dict[str, Any]:
    from shared.storage.blobs import FolderStore

    blob = f"{DATASET}/{input_path.name}"
    store = FolderStore(outdir / "store")
    started = time.perf_counter()
    info = {"parquet": write_parquet, "delta": write_delta, "delta_rs": write_delta_rs}[writer](store, blob, outdir)
    info["work_seconds"] = time.perf_counter() - started
    if info["rows"] != info["valid"]:
        raise RuntimeError(f"{writer}: {info['rows']:,} rows read back, {info['valid']:,} valid")
    return info


def bench(rows_list: list[int], repeat: int, *, seed: int = common.DEFAULT_SEED, settle: float | None = None) -> dict[str, Any]:
    """Every writer on every size, interleaved; medians per writer and size."""
    sizes: dict[str, Any] = {}
    for rows in rows_list:
        input_path = common.dataset(rows, seed)
        runs: dict[str, list[dict[str, Any]]] = {w: [] for w in WRITERS}
        for r in range(repeat):
            common.warm_cache(input_path)
            for writer in WRITERS[r % len(WRITERS) :] + WRITERS[: r % len(WRITERS)]:
                outdir = common.WORK_DIR / f"lake-{writer}-{rows}"
                shutil.rmtree(outdir, ignore_errors=True)
                _prepare(input_path, outdir)
                os.sync()
                if settle is not None:
                    common.settle(settle)
                m = measure.run(
                    [sys.executable, "-m", "bench.lake", writer, str(input_path), str(outdir)],
                    cwd=common.ROOT, env=os.environ | {"PYTHONPATH": str(common.ROOT)},
                )  # fmt: skip
                if m.returncode != 0:
                    raise RuntimeError(f"{writer} failed: {m.stderr[-2000:]}")
                info = json.loads(m.last_line)
                runs[writer].append({"wall": m.wall, "cpu": m.cpu, "peak_rss_mib": m.peak_rss_mib, **info})
                common.log(f"  [{common.rows_label(rows)}] {writer:<9} {m.wall:6.2f} s  {m.peak_rss_mib:6.0f} MiB")
                shutil.rmtree(outdir, ignore_errors=True)
        sizes[str(rows)] = {
            "rows": rows,
            "bytes": input_path.stat().st_size,
            "writers": {w: _summary(runs[w]) for w in WRITERS},
        }
    return {"kind": "lake", "repeat": repeat, "sizes": sizes, **common.stamp()}


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: common.median([r[k] for r in records]) for k in ("wall", "peak_rss_mib", "work_seconds")}
    out["cpu"] = common.median([r["cpu"] for r in records if r.get("cpu") is not None] or [0.0])
    for k in ("ingest_seconds", "commit_seconds"):
        if records and k in records[0]:
            out[k] = common.median([r[k] for r in records])
    out["samples"] = [{k: r[k] for k in ("wall", "peak_rss_mib")} for r in records]
    return out


def table(doc: dict[str, Any]) -> str:
    """The side-by-side markdown table of a result document."""
    lines = ["| rows | writer | wall | CPU | peak RSS | wall vs parquet |", "|---|---|--:|--:|--:|--:|"]
    for size in doc["sizes"].values():
        base = size["writers"]["parquet"]["wall"]
        for writer, s in size["writers"].items():
            lines.append(
                f"| {common.rows_label(size['rows'])} | {writer} | {s['wall']:.2f} s | {s['cpu']:.1f} s | "
                f"{s['peak_rss_mib']:.0f} MiB | {s['wall'] / base:.2f}× |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])), default=str))
