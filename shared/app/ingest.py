"""Ingest one raw blob: read it, run the transform, write the outputs, publish the manifest.

Called by the ``ingest`` blob trigger, the ``ingest_request`` queue trigger (re-drives) and
the CLI (a local file, with a ``FolderStore``). What is written, in order:

1. the clean rows and the aggregates, as Parquet files in the source's partition of each of the
   dataset's Delta tables (``curated/<dataset>/tables/...``), under run-specific names, and the
   *staged commit* that lists them with their statistics: not committed, so invisible to the
   tables' readers until the loader has put the same run into PostgreSQL;
2. the rejects and the report;
3. the manifest, last: a reader who finds it can trust every output it names.

A file that cannot be processed is refused with a code: the raw bytes are copied to
``quarantine`` with an error report, and the returned manifest says ``rejected`` so that the
loader records it in the ledger. Transient failures (storage timeouts, 5xx) are raised so
that the trigger retries; nothing is published for a run that did not finish.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from shared.app import scratch as scratch_folders
from shared.app import settings, telemetry
from shared.core import lake, layout, manifest, report, source, transform
from shared.core.contract import Contract
from shared.core.errors import FileRefused
from shared.core.layout import BlobInfo
from shared.storage.blobs import Store

log = logging.getLogger("pipeline.ingest")


def ingest(
    store: Store,
    blob_name: str,
    contracts: Mapping[str, Contract],
    *,
    container: str = layout.RAW,
    run_id: str | None = None,
    work_dir: Path | None = None,
    reader: Callable[[], tuple[BlobInfo, Iterator[bytes]]] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Process ``container/blob_name`` and return its manifest (succeeded or rejected).

    ``reader`` opens the raw blob (the trigger's own SDK client); by default ``store`` does.
    ``force`` (a replay) asks the loader to replace the source's rows even if this very version
    was loaded before."""
    run_id = run_id or layout.new_run_id()
    dataset = layout.dataset_of(blob_name)
    paths = layout.run_paths(blob_name, run_id, dataset)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    info, blocks = reader() if reader else store.open_blocks(container, blob_name)
    contract = contracts.get(dataset) if dataset else None
    scratch = scratch_folders.new_folder(f"ingest-{run_id}-", work_dir)
    span_attrs = {"dataset": paths.dataset, "source_blob": blob_name, "run_id": run_id}
    try:
        with telemetry.stage("ingest", None, **span_attrs):
            doc = _run(store, info, blocks, paths, contract, contracts, scratch, timings, started, force)
        telemetry.count_file(paths.dataset, "ingest", doc["status"])
        telemetry.count_rows(paths.dataset, doc["counts"])
        return doc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(
    store: Store,
    info: BlobInfo,
    blocks: Iterator[bytes],
    paths: layout.RunPaths,
    contract: Contract | None,
    contracts: Mapping[str, Contract],
    scratch: Path,
    timings: dict[str, float],
    started: float,
    force: bool,
) -> dict[str, Any]:
    blob_name, run_id, dataset = info.name, paths.run_id, layout.dataset_of(info.name)
    try:
        if not layout.accepted(blob_name):
            raise FileRefused("unsupported_file", f"{blob_name!r} does not end in .csv or .csv.gz")
        if contract is None:
            known = ", ".join(sorted(contracts)) or "none"
            where = f"folder {dataset!r}" if dataset else "no dataset folder"
            raise FileRefused("unknown_dataset", f"{blob_name!r} is in {where}; known datasets: {known}")
        with telemetry.stage("open", timings, dataset=contract.dataset):
            src = source.open_source(
                blocks,
                delimiter=contract.dialect.delimiter,
                quote=contract.dialect.quote,
                encoding=contract.dialect.encoding,
                chunk_bytes=settings.chunk_bytes(),
            )
        with telemetry.stage("transform", timings, dataset=contract.dataset):
            lineage = transform.Lineage(source_blob=blob_name, run_id=run_id, etag=info.etag)
            result = transform.run(contract, src, scratch / "out", lineage)
    except FileRefused as refusal:
        doc = _refuse(store, info, paths, contract, refusal, timings, started)
        doc["force"] = force
        return doc

    doc = _publish(store, info, paths, contract, src, result, timings, started, force)
    log.info(
        "ingested %s: %s read, %s valid, %s rejected, %s duplicate",
        blob_name, result.rows_read, result.rows_valid, result.rows_rejected, result.rows_duplicate,
        extra={"run_id": run_id, "dataset": contract.dataset, "source_blob": blob_name, "timings": doc["timings"]},
    )  # fmt: skip
    return doc


def _publish(
    store: Store,
    info: BlobInfo,
    paths: layout.RunPaths,
    contract: Contract,
    src: source.Source,
    result: transform.Result,
    timings: dict[str, float],
    started: float,
    force: bool,
) -> dict[str, Any]:
    t = time.perf_counter()
    staged = _stage(store, info, paths, contract, result)
    timings["upload"] = time.perf_counter() - t
    outputs: dict[str, Any] = {
        # one table in part files: ``name`` is the first (readers of a single file still work),
        # ``parts`` lists them all, relative to ``prefix`` (the source's partition of the table)
        "clean": {
            **manifest.blob_ref(paths.clean),
            "prefix": paths.clean_prefix[1],
            "parts": [f["path"].rsplit("/", 1)[1] for f in staged["tables"][lake.CLEAN]["files"]],
        },
        "aggregates": {},
        "distinct_values": {},
    }
    for output, table in staged["tables"].items():
        kind, _, name = output.partition(":")
        if kind in ("aggregate", "distinct"):
            root = layout.table_path(paths.dataset, table["table"])
            ref = manifest.blob_ref((layout.CURATED, f"{root}/{table['files'][0]['path']}"))
            outputs["aggregates" if kind == "aggregate" else "distinct_values"][name] = ref
    if result.rows_rejected:
        store.upload_file(*paths.rejects, result.outputs.rejects)
        outputs["rejects"] = manifest.blob_ref(paths.rejects)
    outputs["lake"] = {
        "staged": manifest.blob_ref(paths.lake_commit),
        "tables": {o: {"path": layout.table_path(paths.dataset, t["table"])} for o, t in staged["tables"].items()},
    }
    outputs["report"] = manifest.blob_ref(paths.report)
    outputs["manifest"] = manifest.blob_ref(paths.manifest)
    timings["total"] = time.perf_counter() - started
    doc = manifest.succeeded(
        info=info,
        paths=paths,
        contract_version=contract.version,
        outputs=outputs,
        timings=timings,
        **manifest.of_transform(result, src),
    )
    doc["force"] = force
    store.upload_bytes(*paths.report, report.html_report(doc).encode(), "text/html; charset=utf-8")
    store.upload_bytes(*paths.manifest, json.dumps(doc, indent=2, default=str).encode(), "application/json")
    return doc


def _stage(
    store: Store, info: BlobInfo, paths: layout.RunPaths, contract: Contract, result: transform.Result
) -> lake.StagedCommit:
    """Write the run's Parquet files into the source's partition of every lake table and the
    staged commit that names them. Nothing is committed: readers of a table see none of it
    until the loader has put the same run into PostgreSQL (``shared.app.lake``)."""
    names = lake.tables(contract)
    local: dict[str, list[Path]] = {lake.CLEAN: result.outputs.clean_parts}
    local |= {f"aggregate:{n}": [p] for n, p in result.outputs.aggregates.items()}
    local |= {f"distinct:{n}": [p] for n, p in result.outputs.distinct_values.items()}
    tables: dict[str, lake.StagedTable] = {}
    for output, files in local.items():
        table = names[output]
        root = layout.table_path(paths.dataset, table) + "/"
        staged: list[lake.StagedFile] = []
        for i, path in enumerate(files):
            target = paths.lake_file(table, i)
            store.upload_file(*target, path)
            rows, stats = lake.file_stats(path)
            staged.append({"path": target[1].removeprefix(root), "size": path.stat().st_size, "rows": rows, "stats": stats})
        schema = lake.delta_schema(pl.scan_parquet(files[0]).collect_schema())
        tables[output] = {"table": table, "schema": schema, "files": staged}
    commit: lake.StagedCommit = {
        "run_id": paths.run_id,
        "dataset": paths.dataset,
        "source_blob": info.name,
        "source_key": paths.source_key,
        "contract_version": contract.version,
        "tables": tables,
    }
    store.upload_bytes(*paths.lake_commit, json.dumps(commit, separators=(",", ":")).encode(), "application/json")
    return commit


def _refuse(
    store: Store,
    info: BlobInfo,
    paths: layout.RunPaths,
    contract: Contract | None,
    refusal: FileRefused,
    timings: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """Quarantine the raw file with an error report; the run is recorded as rejected."""
    copy = paths.quarantined_copy(info.name)
    store.copy((info.container, info.name), copy)
    timings["total"] = time.perf_counter() - started
    doc = manifest.rejected(
        info=info,
        paths=paths,
        contract_version=contract.version if contract else None,
        code=refusal.code,
        detail=refusal.detail,
        outputs={"quarantined": manifest.blob_ref(copy), "error_report": manifest.blob_ref(paths.error_report)},
        timings=timings,
        rows_read=refusal.rows_read,
    )
    store.upload_bytes(*paths.error_report, json.dumps(doc, indent=2, default=str).encode(), "application/json")
    log.warning(
        "refused %s: %s (%s)", info.name, refusal.code, refusal.detail,
        extra={"run_id": paths.run_id, "dataset": paths.dataset, "source_blob": info.name, "error_code": refusal.code},
    )  # fmt: skip
    return doc
