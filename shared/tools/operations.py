"""Operations on the command line: what ran, what failed, and how to run it again.

    status     recent runs, failures by reason, poison counts, landing-to-loaded lag, what waits
    replay     ask for a run again: one blob, a dataset (optionally a date range), failed runs,
               or messages parked in the poison queues
    backfill   every blob under a prefix: processed here with N workers, or queued for the app
    forget     remove a source blob's contribution from PostgreSQL and the lake, and its outputs
               from curated (explicit, never automatic)

Replays go through the ``ingest-requests`` queue, so the Function App (or the local runner)
does the work with its usual retries; a replayed run replaces the source's contribution even
when the same version was loaded before (``force``), which is what a replay after a fix needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.app import contracts as app_contracts
from shared.app import settings
from shared.core import layout


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the CLI."""
    s = sub.add_parser("status", help="recent runs, failures, poison queues, lag")
    s.add_argument("--since", default="24h", help="how far back: 30m, 24h, 7d (default 24h)")
    s.add_argument("--dataset")
    s.add_argument("--limit", type=int, default=15, help="recent runs to list")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    s.set_defaults(func=cmd_status)

    r = sub.add_parser("replay", help="run blobs again: one, a dataset, failed runs, or the poison queues")
    what = r.add_mutually_exclusive_group(required=True)
    what.add_argument("--blob", help="a raw blob name, e.g. bank_transactions/2024/01.csv")
    what.add_argument("--dataset", help="every raw blob of a dataset (narrow with --since/--until)")
    what.add_argument("--failed", action="store_true", help="every blob version whose last load failed")
    what.add_argument("--poison", nargs="?", const="all", choices=["all", "load", "ingest", "blobs"], help="poison queues")
    r.add_argument("--since", help="with --dataset: blobs landed at or after this ISO date/time")
    r.add_argument("--until", help="with --dataset: blobs landed before this ISO date/time")
    r.add_argument("--id", help="with --poison: only this message id")
    r.add_argument("--dry-run", action="store_true", help="list what would be replayed, send nothing")
    r.set_defaults(func=cmd_replay)

    b = sub.add_parser("backfill", help="process every blob under a prefix")
    b.add_argument("--prefix", required=True, help="raw blob name prefix, e.g. bank_transactions/2023/")
    b.add_argument("--concurrency", type=int, default=2, help="files processed at once (default 2)")
    b.add_argument("--queue", action="store_true", help="queue ingest requests for the app instead of working here")
    b.set_defaults(func=cmd_backfill)

    f = sub.add_parser("forget", help="remove a source blob's contribution from PostgreSQL and the lake")
    f.add_argument("blob", help="the raw blob name whose rows to remove")
    f.add_argument("--force", action="store_true", help="even if the blob still exists in raw")
    f.set_defaults(func=cmd_forget)


# --- helpers ------------------------------------------------------------------------------------


def parse_age(text: str) -> timedelta:
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if not text or text[-1] not in units:
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 24h or 7d, not {text!r}")
    return timedelta(**{units[text[-1]]: float(text[:-1])})


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _connect() -> Any:
    from shared.postgres import connections, ledger

    conn = connections.connect()
    ledger.ensure(conn, settings.ledger_schema())
    return conn


def request(blob: str, reason: str, *, force: bool = True) -> str:
    """The body of an ingest request, as the nightly job and replays send it."""
    return json.dumps({"container": layout.RAW, "blob": blob, "reason": reason, "force": force, "requested_at": _now()})


def _now() -> str:
    return datetime.now(UTC).isoformat()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


# --- status -------------------------------------------------------------------------------------


def collect_status(conn: Any, queues: Any, store: Any, *, since: timedelta, dataset: str | None, limit: int) -> dict[str, Any]:
    """Everything ``status`` shows, as data."""
    from shared.app import reprocess
    from shared.postgres import ledger
    from shared.storage import poison

    schema = settings.ledger_schema()
    cutoff = datetime.now(UTC) - since
    seen = ledger.status_report(conn, schema, since=cutoff, dataset=dataset, limit=limit)
    lags = seen["lag_seconds"]
    plan = reprocess.make_plan(store, conn, schema, app_contracts.load(), grace=timedelta(0), limit=10**9, dry_run=True)
    return {
        "since": cutoff.isoformat(),
        "dataset": dataset,
        "runs_by_status": seen["runs_by_status"],
        "failures_by_reason": seen["failures"],
        "poison": poison.counts(queues),
        "lag_seconds": {
            "count": len(lags),
            "p50": percentile(lags, 0.5),
            "p95": percentile(lags, 0.95),
            "max": max(lags, default=0.0),
        },
        "waiting": plan.summary(),
        "recent": [{**r, "at": r["at"].isoformat()} for r in seen["recent"]],
    }


def cmd_status(args: argparse.Namespace) -> int:
    from shared.storage.accounts import queue_service
    from shared.storage.blobs import BlobStore

    conn = _connect()
    status = collect_status(
        conn, queue_service(), BlobStore(), since=parse_age(args.since), dataset=args.dataset, limit=args.limit
    )
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(render_status(status))
    poisoned = sum(status["poison"].values())
    return 1 if poisoned or status["runs_by_status"].get("failed") else 0


def render_status(s: dict[str, Any]) -> str:
    lines = [f"Since {s['since']}" + (f" · dataset {s['dataset']}" if s["dataset"] else "")]
    runs = s["runs_by_status"]
    lines.append("Runs: " + (" · ".join(f"{k} {v:,}" for k, v in sorted(runs.items())) or "none"))
    if s["failures_by_reason"]:
        lines.append("Failures and refusals by reason:")
        for f in s["failures_by_reason"]:
            lines.append(f"  {f['status']:<9} {f['reason']:<22} {f['count']:>6,}   e.g. {f['example']}")
    lines.append("Poison queues: " + " · ".join(f"{k} {v}" for k, v in s["poison"].items()))
    lag = s["lag_seconds"]
    if lag["count"]:
        lines.append(
            f"Landing to loaded: p50 {lag['p50']:.1f} s · p95 {lag['p95']:.1f} s · max {lag['max']:.1f} s (n={lag['count']})"
        )
    w = s["waiting"]
    lines.append(
        f"Waiting for a run: {w['requeued']} blob version(s) {w['reasons'] or ''}; "
        f"{w['backing_off']} backing off after a failure; {w['loaded_but_deleted_from_raw']} loaded but deleted from raw"
    )
    if s["recent"]:
        lines.append("Recent:")
        for r in s["recent"]:
            counts = (
                f"read {r['read']:,} valid {r['valid']:,} rejected {r['rejected']:,} dup {r['duplicate']:,}"
                if r["read"] is not None
                else ""
            )
            err = f" [{r['error']}]" if r["error"] else ""
            lines.append(f"  {r['at'][:19]}  {r['status']:<10} {r['blob']}  {counts}{err}")
    return "\n".join(lines)


# --- replay ---------------------------------------------------------------------------------------


def replay_targets(args: argparse.Namespace, store: Any, conn: Any | None) -> list[tuple[str, str]]:
    """(blob, reason) pairs a replay asks for."""
    if args.blob:
        return [(args.blob, "replay")]
    if args.dataset:
        since, until = parse_time(args.since), parse_time(args.until)
        out = []
        for info in store.list(layout.RAW, f"{args.dataset}/"):
            if since and info.last_modified < since:
                continue
            if until and info.last_modified >= until:
                continue
            if layout.accepted(info.name):
                out.append((info.name, "replay"))
        return out
    if args.failed:
        from shared.postgres import ledger

        rows = ledger.all_rows(conn, settings.ledger_schema())
        return sorted({(r["source_blob"], "replay_failed") for r in rows if r["status"] == ledger.FAILED})
    return []


def cmd_replay(args: argparse.Namespace) -> int:
    from shared.storage import poison
    from shared.storage.accounts import queue_service
    from shared.storage.blobs import BlobStore
    from shared.storage.queues import QueueSender

    if args.poison:
        queues = queue_service()
        names = {"all": poison.POISON_QUEUES, "load": (poison.POISON_QUEUES[0],), "ingest": (poison.POISON_QUEUES[1],)}
        names["blobs"] = (poison.BLOB_TRIGGER_POISON,)
        moved = 0
        for queue in names[args.poison]:
            if args.dry_run:
                for m in poison.peek(queues, queue):
                    print(f"would replay {queue} {m.id}: {m.describe()}")
                continue
            for m in poison.replay(queues, queue, message_id=args.id):
                moved += 1
                print(f"replayed {queue} {m.id}: {m.describe()}")
        if not args.dry_run:
            print(f"{moved} message(s) moved back")
        return 0
    conn = _connect() if args.failed else None
    targets = replay_targets(args, BlobStore(), conn)
    sender = None if args.dry_run else QueueSender(encoding=settings.message_encoding())
    for blob, reason in targets:
        if sender:
            sender.send(layout.INGEST_QUEUE, request(blob, reason))
        print(("would replay " if args.dry_run else "replay requested: ") + blob)
    print(f"{len(targets)} blob(s)" + (" (dry run)" if args.dry_run else f" queued on {layout.INGEST_QUEUE}"))
    return 0


# --- backfill -------------------------------------------------------------------------------------


def cmd_backfill(args: argparse.Namespace) -> int:
    from shared.storage.blobs import BlobStore
    from shared.storage.queues import QueueSender
    from shared.tools.progress import Progress

    store = BlobStore()
    blobs = [b.name for b in store.list(layout.RAW, args.prefix) if layout.accepted(b.name)]
    if not blobs:
        print(f"no .csv or .csv.gz blob under raw/{args.prefix}")
        return 0
    bar = Progress("backfill", len(blobs), " files")
    if args.queue:
        sender = QueueSender(encoding=settings.message_encoding())
        for name in blobs:
            sender.send(layout.INGEST_QUEUE, request(name, "backfill", force=False))
            bar.advance()
        bar.close()
        return 0
    outcomes = backfill_here(store, blobs, args.concurrency, bar.advance)
    bar.close()
    failed = {b: o for b, o in outcomes.items() if o not in ("loaded", "duplicate", "superseded", "rejected")}
    summary: dict[str, int] = {}
    for o in outcomes.values():
        summary[o] = summary.get(o, 0) + 1
    print(" · ".join(f"{k} {v}" for k, v in sorted(summary.items())))
    for blob, outcome in failed.items():
        print(f"  {blob}: {outcome}", file=sys.stderr)
    return 1 if failed else 0


def backfill_here(store: Any, blobs: list[str], concurrency: int, advance: Any) -> dict[str, str]:
    """Ingest and load each blob in this process, ``concurrency`` at a time."""
    from shared.app import ingest
    from shared.app.load import Loader
    from shared.postgres import connections

    contracts = app_contracts.load()
    cache = connections.ConnectionCache()
    loader = Loader(cache.get, store, contracts, settings.ledger_schema(), settings.reader_role())

    def one(name: str) -> str:
        try:
            doc = ingest.ingest(store, name, contracts, force=False)
            return loader.load(doc).status
        except Exception as exc:  # noqa: BLE001 - reported per file; the others go on
            return f"error: {type(exc).__name__}: {exc}"
        finally:
            advance()

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        futures = {pool.submit(one, name): name for name in blobs}
        return {futures[f]: f.result() for f in as_completed(futures)}


# --- forget ---------------------------------------------------------------------------------------


def cmd_forget(args: argparse.Namespace) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    from shared.app import lake
    from shared.postgres.replace import remove_source
    from shared.storage.blobs import BlobStore

    try:
        BlobStore().info(layout.RAW, args.blob)
        exists = True
    except ResourceNotFoundError:
        exists = False
    if exists and not args.force:
        print(f"raw/{args.blob} still exists: delete it first, or pass --force", file=sys.stderr)
        return 2
    dataset = layout.dataset_of(args.blob)
    contract = app_contracts.load().get(dataset or "")
    if contract is None:
        print(f"{args.blob!r} is not under a known dataset folder", file=sys.stderr)
        return 2
    conn = _connect()
    removed = remove_source(conn, contract, args.blob, settings.ledger_schema())
    print(f"removed {sum(removed.values()):,} row(s) of {args.blob}: " + ", ".join(f"{k} {v}" for k, v in removed.items()))
    store = BlobStore()
    versions, _ = lake.sync_source(conn, settings.ledger_schema(), store, contract, args.blob, by="forget")
    print("lake: " + (", ".join(f"{k} at version {v}" for k, v in versions.items() if v is not None) or "nothing to remove"))
    deleted = forget_outputs(store, contract.dataset, args.blob)
    print(f"deleted {deleted} output(s) of its runs from curated and quarantine (lake files go with the vacuum)")
    return 0


def forget_outputs(store: Any, dataset: str, blob: str) -> int:
    """Delete every run's outputs of a source outside the lake tables: manifests, reports,
    staged lake commits (and pre-lake Parquet), and its rejects. The lake's files are removed
    from the tables by the commit before, and deleted by the vacuum after the retention, so
    that a reader travelling back in time still finds them until then. Quarantined copies of
    refused files stay (they never contributed)."""
    paths = layout.run_paths(blob, "", dataset)
    deleted = 0
    for container, prefix in paths.prefixes():
        for info in store.list(container, prefix):
            if paths.source_key in info.name.split("/"):
                store.delete(container, info.name)
                deleted += 1
    for info in store.list(layout.QUARANTINE, f"{dataset}/{paths.source_key}/"):
        if info.name.endswith("/rejects.parquet"):
            store.delete(layout.QUARANTINE, info.name)
            deleted += 1
    return deleted
