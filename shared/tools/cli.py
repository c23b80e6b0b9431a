"""The command line: ``python -m shared <command>``.

    demo        generate a sample, drop it into raw, run until loaded, print what happened
    run         the local runner: fire the app's functions against Azurite (``--once``: until idle)
    process     run the transform on a local CSV, no Azure at all, outputs to a folder
    upload      put a local file into raw/<dataset>/
    generate    write a deterministic sample CSV of a bundled dataset

Settings come from the environment; ``local.settings.json`` (as ``func start`` reads it) fills in
what the environment does not set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.app import settings
from shared.tools.progress import Progress


def load_local_settings(path: Path | None = None) -> None:
    """Fill the environment from local.settings.json (or its template), never overriding."""
    for candidate in (
        [path] if path else [settings.APP_ROOT / "local.settings.json", settings.APP_ROOT / "local.settings.json.template"]
    ):
        if candidate and candidate.exists():
            values = json.loads(candidate.read_text()).get("Values", {})
            for key, value in values.items():
                os.environ.setdefault(key, str(value))
            return


# --- commands ---------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    from shared.tools import samples

    generator = samples.GENERATORS.get(args.dataset)
    if generator is None:
        print(f"no sample generator for {args.dataset!r}; known: {', '.join(samples.GENERATORS)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    path = generator(args.out, args.rows, seed=args.seed)
    print(
        f"wrote {args.rows:,} rows of {args.dataset} to {path} ({path.stat().st_size / 1e6:,.1f} MB)"
        f" in {time.monotonic() - started:.1f} s"
    )
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from shared.app import contracts, ingest
    from shared.core import layout, report
    from shared.storage.blobs import FolderStore

    src = Path(args.file).resolve()
    store = FolderStore(Path(args.out))
    name = f"{args.dataset}/{args.name or src.name}"
    store.upload_file(layout.RAW, name, src)
    doc = ingest.ingest(store, name, contracts.load())
    print(report.text_summary(doc))
    where = store.root
    print(f"outputs under {where}/{layout.CURATED}/{doc['dataset']} and {where}/{layout.QUARANTINE}/{doc['dataset']}")
    return 0 if doc["status"] == "succeeded" else 1


def upload(path: Path, blob_name: str, store: Any | None = None) -> None:
    """Upload with a progress bar; the blob appears whole (committed at the end) or not at all."""
    from azure.storage.blob import BlobClient

    from shared.core import layout
    from shared.storage.blobs import BlobStore

    store = store or BlobStore()
    store.ensure_containers(layout.CONTAINERS)
    client: BlobClient = store.service.get_blob_client(layout.RAW, blob_name)
    size = path.stat().st_size
    bar = Progress(f"upload {blob_name}", size, "B")

    def hook(response: Any) -> None:
        sent = response.context.get("upload_stream_current")
        if sent is not None:
            bar.advance(sent - bar.done)

    with open(path, "rb") as fh:
        client.upload_blob(fh, overwrite=True, max_concurrency=2, raw_response_hook=hook)
    bar.done = size
    bar.close()


def cmd_upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    upload(path, f"{args.dataset}/{args.name or path.name}")
    return 0


def _host(workers: int, quiet: bool = False) -> Any:
    from shared.tools.runner import LocalHost

    return LocalHost.of_function_app(workers=workers, on_event=(lambda _t: None) if quiet else (lambda t: print(t, flush=True)))


def cmd_run(args: argparse.Namespace) -> int:
    host = _host(args.workers)
    for name in args.fire or []:
        host.fire(name)
    try:
        stats = host.run(until_idle=args.once)
    except KeyboardInterrupt:
        host.stop()
        return 130
    print(f"{stats.invocations} invocations, {stats.failures} failed, {stats.poisoned} sent to poison queues")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from shared.core import layout
    from shared.postgres import connections, ledger
    from shared.storage.blobs import BlobStore
    from shared.storage.queues import QueueSender
    from shared.tools import samples

    print("== CSV pipeline demo: raw -> ingest -> curated (staged) -> load -> PostgreSQL -> Delta tables")
    ensure_database()
    sample = Path(args.data_dir) / f"bank_transactions-{args.rows}.csv"
    if not sample.exists():
        started = time.monotonic()
        samples.bank_transactions(sample, args.rows, seed=args.seed)
        print(
            f"generated {sample} ({args.rows:,} rows, {sample.stat().st_size / 1e6:,.1f} MB)"
            f" in {time.monotonic() - started:.1f} s"
        )
    store = BlobStore()
    store.ensure_containers(layout.CONTAINERS)
    QueueSender(encoding=settings.message_encoding()).ensure_queues(layout.QUEUES)
    host = _host(args.workers, quiet=False)
    host.prepare()
    host.run(until_idle=True)  # settle anything left from an earlier demo first
    blob = f"bank_transactions/demo-{time.strftime('%Y%m%dT%H%M%S')}.csv"
    upload(sample, blob, store)
    landed = time.monotonic()
    host.run(until_idle=True)
    took = time.monotonic() - landed
    conn = connections.connect()
    row = ledger.latest(conn, settings.ledger_schema(), blob)
    if row is None:
        print("the file was not loaded: see the runner's messages above", file=sys.stderr)
        return 1
    status, run_id, manifest, groups = row["status"], row["run_id"], row["manifest"], row["groups"]
    read, valid, rejected, dup = (row[f"rows_{k}"] for k in ("read", "valid", "rejected", "duplicate"))
    print()
    print(f"file            {layout.RAW}/{blob}")
    print(f"status          {status} (run {run_id})")
    print(f"rows read       {read:,} = valid {valid:,} + rejected {rejected:,} + duplicate {dup:,}")
    for name, n in (groups or {}).items():
        print(f"groups loaded   {n:,} ({name})")
    print(f"seconds         {took:.1f} from upload complete to rows queryable (runner polling included)")
    outputs = manifest.get("outputs", {})
    for label in ("clean", "rejects", "report", "manifest"):
        if label in outputs:
            print(f"{label:<15} {outputs[label]['container']}/{outputs[label]['name']}")
    for ref in outputs.get("aggregates", {}).values():
        print(f"{'aggregate':<15} {ref['container']}/{ref['name']}")
    for output, table in outputs.get("lake", {}).get("tables", {}).items():
        print(f"{'lake table':<15} {layout.CURATED}/{table['path']} ({output})")
    print("\nanalytics.bank_transactions_daily (top 5 by total_value):")
    cur = conn.execute(
        "SELECT txn_date, domain, location, total_value, transaction_count, record_count "
        "FROM analytics.bank_transactions_daily ORDER BY total_value DESC, txn_date, domain, location LIMIT 5"
    )
    cols = [d.name for d in cur.description or []]
    rows = cur.fetchall()
    widths = [max(len(c), *(len(str(r[i])) for r in rows)) for i, c in enumerate(cols)]
    print("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  " + "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))
    total = conn.execute("SELECT count(*), sum(record_count) FROM analytics.bank_transactions_daily").fetchone()
    print(f"  ... {total[0]:,} rows in the view, {total[1]:,} records across every loaded file")
    return 0


def ensure_database() -> None:
    """Create the DSN's database when the server runs but the database does not exist yet."""
    import psycopg

    from shared.postgres import connections

    dsn = settings.env("POSTGRES_DSN")
    if not dsn:
        return
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    try:
        connections.connect().close()
        return
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    name = str(params["dbname"])
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        from psycopg import sql

        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    print(f"created database {name}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m shared", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a deterministic sample CSV")
    g.add_argument("--dataset", default="bank_transactions")
    g.add_argument("--rows", type=int, default=1_000_000)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--out", required=True)
    g.set_defaults(func=cmd_generate)

    pr = sub.add_parser("process", help="transform a local CSV with no Azure at all")
    pr.add_argument("file")
    pr.add_argument("--dataset", required=True)
    pr.add_argument("--out", default=".data/local")
    pr.add_argument("--name", help="blob name under raw/<dataset>/ (default: the file name)")
    pr.set_defaults(func=cmd_process)

    u = sub.add_parser("upload", help="upload a local file into raw/<dataset>/")
    u.add_argument("file")
    u.add_argument("--dataset", required=True)
    u.add_argument("--name")
    u.set_defaults(func=cmd_upload)

    r = sub.add_parser("run", help="the local runner (Functions host stand-in)")
    r.add_argument("--once", action="store_true", help="process everything pending, then exit")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--fire", action="append", metavar="FUNCTION", help="fire a timer function first (e.g. reprocess)")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="the main job, end to end, on a generated sample")
    d.add_argument("--rows", type=int, default=1_000_000)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--data-dir", default=".data/samples")
    d.set_defaults(func=cmd_demo)

    from shared.tools import contract_commands, operations

    contract_commands.register(sub)  # infer, check, report
    operations.register(sub)  # status, replay, backfill, forget
    return p


def main(argv: Sequence[str] | None = None) -> int:
    load_local_settings()
    from shared.app import logs

    logs.configure()
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
