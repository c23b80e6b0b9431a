"""Contract tooling on the command line: draft a contract, dry-run a file, show a run's report.

    infer    draft a contract from a sample file, every guess marked, for a person to edit
    check    run a local file through the real transform against a contract, in a temporary
             folder that is deleted: what would be rejected and why, with nothing written
    report   the quality summary of a run, from a manifest file or the latest run of a raw blob

A new feed is meant to need a contract file and no code; these commands are how a person
writes that file (``infer``), proves it against real data before it goes live (``check``) and
reads what a run did (``report``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.tools.checks import known_contract, local_csv, raw_name
from shared.tools.failures import CommandError

CHECK_LIMIT = 20


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the CLI."""
    i = sub.add_parser("infer", help="draft a contract from a sample file, every guess marked for a person to edit")
    i.add_argument("file", help="a local CSV file (.csv or .csv.gz, any encoding the pipeline reads)")
    i.add_argument("--dataset", help="dataset name (default: from the file name)")
    i.add_argument("--out", help="write the draft here (e.g. contracts/NAME.toml) instead of printing it")
    i.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    i.add_argument("--sample-mb", type=float, default=8.0, help="read at most this much of the file (default 8)")
    i.set_defaults(func=cmd_infer)

    c = sub.add_parser("check", help="dry-run a local file against a contract: what would be rejected and why; writes nothing")
    c.add_argument("file", help="the local file to try (.csv or .csv.gz)")
    c.add_argument("--dataset", help="the dataset whose contract to use (from PIPELINE_CONTRACTS_DIR)")
    c.add_argument("--contract", help="a contract file to use instead (e.g. a draft from infer)")
    c.add_argument("--limit", type=int, default=CHECK_LIMIT, help=f"rejected rows to show (default {CHECK_LIMIT})")
    c.add_argument("--fail-on-rejects", action="store_true", help="exit 1 when any row would be rejected")
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("report", help="the quality summary of a run: from a manifest file or a raw blob's latest run")
    r.add_argument("target", help="a manifest or error-report JSON file, or a raw blob name (its latest run; raw/ optional)")
    r.add_argument("--folder", help="read runs from a local folder written by `process --out` instead of storage")
    r.add_argument("--html", help="also write the run's HTML page to this file")
    r.set_defaults(func=cmd_report)


# --- infer ---------------------------------------------------------------------------------------


def cmd_infer(args: argparse.Namespace) -> int:
    from shared.core.errors import FileRefused
    from shared.tools import inference

    path = local_csv(args.file)
    try:
        draft = inference.infer(path, dataset=args.dataset, sample_bytes=int(args.sample_mb * 1024 * 1024))
    except FileRefused as refusal:
        print(f"cannot draft a contract: {refusal.code} - {refusal.detail}", file=sys.stderr)
        return 1
    text = draft.toml()
    inference.validate(text)  # a draft that does not load is a bug here, not the user's problem
    if not args.out:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if out.exists() and not args.force:
        raise CommandError(f"{out} exists; use --force to overwrite it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc.strerror or exc}") from exc
    sampled = f"first {draft.rows:,}" if draft.truncated else f"all {draft.rows:,}"
    print(f"wrote {out}: {len(draft.columns)} columns from the {sampled} rows of {path.name}; read the '# guess' lines")
    return 0


# --- check ---------------------------------------------------------------------------------------


def _contract(args: argparse.Namespace) -> Any:
    from shared.core.contract import load_contract

    if args.contract:
        if not Path(args.contract).is_file():
            raise CommandError(f"no such contract file: {args.contract}")
        contract = load_contract(args.contract)
        if args.dataset and args.dataset != contract.dataset:
            raise CommandError(f"{args.contract} is the contract of {contract.dataset!r}, not {args.dataset!r}")
        return contract
    if not args.dataset:
        raise CommandError("say which contract: --dataset NAME or --contract PATH")
    return known_contract(args.dataset)


def dry_run(path: Path, contract: Any, scratch: Path) -> dict[str, Any]:
    """Split and transform ``path`` under ``scratch``; return the run's manifest, as ingest
    would publish it (without uploading anything)."""
    from shared.core import layout, manifest, source, transform
    from shared.core.layout import BlobInfo

    name = f"{contract.dataset}/{path.name}"
    run_id = layout.new_run_id()
    paths = layout.run_paths(name, run_id, contract.dataset)
    stat = path.stat()
    info = BlobInfo("local", name, "", datetime.fromtimestamp(stat.st_mtime, UTC), stat.st_size)
    src = source.split(
        source.file_blocks(path),
        scratch / "chunks",
        delimiter=contract.dialect.delimiter,
        quote=contract.dialect.quote,
        encoding=contract.dialect.encoding,
    )
    result = transform.run(contract, src, scratch / "out", transform.Lineage(source_blob=name, run_id=run_id))
    doc = manifest.succeeded(
        info=info,
        paths=paths,
        contract_version=contract.version,
        outputs={},
        timings={"transform": result.seconds},
        **manifest.of_transform(result, src),
    )
    doc["rejects_file"] = str(result.outputs.rejects)
    return doc


def rejected_rows(rejects: Path, limit: int) -> list[dict[str, Any]]:
    """The first rejected rows in line order: line, reason, column and that column's raw text."""
    import polars as pl

    if limit <= 0 or not rejects.exists():
        return []
    frame = pl.scan_parquet(rejects).sort("line").head(limit).collect()
    out = []
    for row in frame.iter_rows(named=True):
        column = row["column"]
        raw = row.get(column) if column else row.get("extra_fields")
        out.append({"line": row["line"], "reason": row["reason"], "column": column, "raw": raw})
    return out


def cmd_check(args: argparse.Namespace) -> int:
    from shared.core import report
    from shared.core.errors import FILE_REASONS, FileRefused

    path = local_csv(args.file)
    contract = _contract(args)
    scratch = Path(tempfile.mkdtemp(prefix="check-"))
    try:
        try:
            doc = dry_run(path, contract, scratch)
        except FileRefused as refusal:
            print(f"{contract.dataset} · {path} · contract v{contract.version} · would be refused")
            print(f"  refused: {refusal.code} - {refusal.detail}")
            print(f"  ({FILE_REASONS.get(refusal.code, '')}; the whole file would go to quarantine)")
            return 1
        print(report.text_summary(doc).replace(" · succeeded", " · dry run (nothing written)", 1))
        rows = rejected_rows(Path(doc["rejects_file"]), args.limit)
        if rows:
            shown = f"first {len(rows)}" if len(rows) < doc["counts"]["rows_rejected"] else "all"
            print(f"  rejected rows ({shown} of {doc['counts']['rows_rejected']:,}, by line):")
            width = max(len(str(r["line"])) for r in rows)
            for r in rows:
                where = r["column"] or "(row)"
                raw = "(empty)" if r["raw"] is None or r["raw"] == "" else repr(r["raw"])
                print(f"    line {r['line']:>{width}}  {r['reason']:<18} {where:<20} {raw}")
        return 1 if args.fail_on_rejects and doc["counts"]["rows_rejected"] else 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- report --------------------------------------------------------------------------------------


def latest_run(store: Any, blob: str) -> dict[str, Any] | None:
    """The newest manifest (or, for a refused run, error report) of a raw blob."""
    from shared.core import layout

    name = raw_name(blob)
    paths = layout.run_paths(name, "latest", layout.dataset_of(name))
    candidates: list[tuple[str, str, str]] = []  # (run id, container, blob)
    manifests = f"{paths.dataset}/manifests/{paths.source_key}/"
    for info in store.list(layout.CURATED, manifests):
        candidates.append((info.name.rsplit("/", 1)[-1].removesuffix(".json"), layout.CURATED, info.name))
    for info in store.list(layout.QUARANTINE, f"{paths.dataset}/{paths.source_key}/"):
        if info.name.endswith("/error.json"):
            candidates.append((info.name.split("/")[-2], layout.QUARANTINE, info.name))
    if not candidates:
        return None
    _, container, newest = max(candidates)
    return json.loads(store.read_bytes(container, newest))


def cmd_report(args: argparse.Namespace) -> int:
    from shared.core import report

    target = Path(args.target)
    if target.suffix == ".json" and target.is_file():
        doc = json.loads(target.read_text(encoding="utf-8"))
    else:
        if args.folder:
            from shared.storage.blobs import FolderStore

            store: Any = FolderStore(Path(args.folder))
        else:
            from shared.tools import clients

            store = clients.blob_store()
        doc = latest_run(store, args.target)
        if doc is None:
            print(f"no run of {args.target!r} found (neither a manifest nor an error report)", file=sys.stderr)
            return 1
    print(report.text_summary(doc))
    if args.html:
        try:
            Path(args.html).write_text(report.html_report(doc), encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {args.html}: {exc.strerror or exc}") from exc
        print(f"  page: {args.html}")
    return 0 if doc.get("status") == "succeeded" else 1
