"""Operations on the command line: what ran, what failed, and how to run it again.

    status     recent runs, failures by reason, poison counts, landing-to-loaded lag, what waits,
               and what needs a person (exit 1 when something does)
    replay     ask for a run again: one blob, a dataset (optionally a date range), the blobs
               whose last run failed or was refused (by reason), or messages parked in the
               poison queues
    backfill   every blob under a prefix: processed here with N workers, or queued for the app
    forget     remove a source blob's contribution from PostgreSQL and the lake, and its outputs
               from curated (explicit, never automatic)

Replays go through the ``ingest-requests`` queue, so the Function App (or the local runner)
does the work with its usual retries; a replayed run replaces the source's contribution even
when the same version was loaded before (``force``), which is what a replay after a fix needs.
A replay that names something (a blob, a dataset, a message id) that does not exist is a
mistake and exits 2 having sent nothing; one that selects by state (``--status``, ``--poison``)
and finds nothing says so and exits 0.
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
from shared.tools import clients
from shared.tools.checks import at_least, dataset_contract, known_contract, raw_name
from shared.tools.failures import CommandError
from shared.tools.status_text import needs_a_person, parked_blobs, render_status, waiting_with_parked

POISON_CHOICES = ("all", "load", "ingest", "blobs")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the CLI."""
    s = sub.add_parser("status", help="what ran, failed and why, poison queues, lag, what waits; exit 1 if a person is needed")
    s.add_argument("--since", type=parse_age, default=parse_age("24h"), help="how far back: 30m, 24h, 7d (default 24h)")
    s.add_argument("--dataset", help="only this dataset")
    s.add_argument("--limit", type=at_least(0), default=15, help="recent runs to list (default 15)")
    s.add_argument("--json", action="store_true", help="print the status as JSON (same exit code)")
    s.set_defaults(func=cmd_status)

    r = sub.add_parser("replay", help="run blobs again: one, a dataset, failed or refused ones, or the poison queues")
    what = r.add_mutually_exclusive_group(required=True)
    what.add_argument("--blob", help="a raw blob name, e.g. bank_transactions/2024/01.csv (raw/ prefix optional)")
    what.add_argument("--dataset", help="every raw blob of a dataset (narrow with --since/--until)")
    what.add_argument("--status", choices=["failed", "rejected"], help="every blob whose last run failed, or was refused")
    what.add_argument("--failed", action="store_true", help="the same as --status failed")
    what.add_argument("--poison", nargs="?", const="all", choices=POISON_CHOICES, help="poison queues (default: all)")
    r.add_argument("--reason", help="with --status: only this reason code, e.g. unknown_dataset, rejected_by_database")
    r.add_argument("--since", type=parse_time, help="with --dataset: blobs landed at or after this ISO date/time")
    r.add_argument("--until", type=parse_time, help="with --dataset: blobs landed before this ISO date/time")
    r.add_argument("--id", help="with --poison: only this message id (replay --poison --dry-run lists them)")
    r.add_argument("--dry-run", action="store_true", help="list what would be replayed, send nothing")
    r.set_defaults(func=cmd_replay)

    b = sub.add_parser("backfill", help="process every blob under a raw prefix, here or queued for the app")
    b.add_argument("--prefix", required=True, help="raw blob name prefix, e.g. bank_transactions/2023/ (raw/ optional)")
    b.add_argument("--concurrency", type=at_least(1), default=2, help="files processed at once (default 2)")
    b.add_argument("--queue", action="store_true", help="queue ingest requests for the app instead of working here")
    b.set_defaults(func=cmd_backfill)

    f = sub.add_parser("forget", help="remove a deleted source blob's contribution from PostgreSQL and the lake")
    f.add_argument("blob", help="the raw blob name whose rows to remove (raw/ prefix optional)")
    f.add_argument("--force", action="store_true", help="even if the blob still exists in raw")
    f.set_defaults(func=cmd_forget)


# --- helpers ------------------------------------------------------------------------------------


def parse_age(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d``: an argparse type, so a mistake is argparse's one line (exit 2)."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    try:
        if not text or text[-1] not in units or float(text[:-1]) < 0:
            raise ValueError(text)
        return timedelta(**{units[text[-1]]: float(text[:-1])})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 24h or 7d, not {text!r}") from None


def parse_time(text: str) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise): an argparse type."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date or date-time like 2024-01-31T12:00, not {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def request(blob: str, reason: str, *, force: bool = True) -> str:
    """The body of an ingest request, as the nightly job and replays send it."""
    return json.dumps({"container": layout.RAW, "blob": blob, "reason": reason, "force": force, "requested_at": _now()})


def _now() -> str:
    return datetime.now(UTC).isoformat()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def _raw_exists(store: Any, blob: str) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        store.info(layout.RAW, blob)
        return True
    except ResourceNotFoundError:
        return False


# --- status -------------------------------------------------------------------------------------


def collect_status(conn: Any, queues: Any, store: Any, *, since: timedelta, dataset: str | None, limit: int) -> dict[str, Any]:
    """Everything ``status`` shows, as data: the ledger's view, the poison queues, what waits for
    a run (and why), and the list of what needs a person."""
    from shared.app import reprocess
    from shared.postgres import ledger
    from shared.storage import poison

    schema = settings.ledger_schema()
    cutoff = datetime.now(UTC) - since
    seen = ledger.status_report(conn, schema, since=cutoff, dataset=dataset, limit=limit)
    lags = seen["lag_seconds"]
    plan = reprocess.make_plan(store, conn, schema, app_contracts.load(), grace=timedelta(0), limit=10**9, dry_run=True)
    parked = parked_blobs(queues, settings.message_encoding())
    status = {
        "since": cutoff.isoformat(),
        "dataset": dataset,
        "runs_by_status": seen["runs_by_status"],
        "failures_by_reason": seen["failures"],
        "outstanding": seen["outstanding"],
        "poison": poison.counts(queues),
        "parked": parked,
        "lag_seconds": {
            "count": len(lags),
            "p50": percentile(lags, 0.5),
            "p95": percentile(lags, 0.95),
            "max": max(lags, default=0.0),
        },
        "waiting": waiting_with_parked(plan, parked),
        "loaded_but_deleted_from_raw": plan.deleted_from_raw,
        "recent": [{**r, "at": r["at"].isoformat()} for r in seen["recent"]],
    }
    status["needs_a_person"] = needs_a_person(status)
    return status


def cmd_status(args: argparse.Namespace) -> int:
    conn = clients.database()
    status = collect_status(
        conn, clients.queue_service(), clients.blob_store(), since=args.since, dataset=args.dataset, limit=args.limit
    )
    print(json.dumps(status, indent=2, default=str) if args.json else render_status(status))
    return 1 if status["needs_a_person"] else 0


# --- replay ---------------------------------------------------------------------------------------


def _check_combinations(args: argparse.Namespace) -> None:
    """Options that mean nothing without their partner: refuse them rather than ignore them."""
    if args.id and not args.poison:
        raise CommandError("--id goes with --poison (e.g. replay --poison load --id ID)")
    if (args.since or args.until) and not args.dataset:
        raise CommandError("--since and --until go with --dataset")
    if args.reason and not args.status:
        raise CommandError("--reason goes with --status (e.g. replay --status rejected --reason unknown_dataset)")
    if args.failed:
        args.status = "failed"
    if args.status == "rejected" and args.reason:
        from shared.core.errors import FILE_REASONS

        if args.reason not in FILE_REASONS:
            raise CommandError(f"--reason {args.reason}: not a refusal code; known: {', '.join(FILE_REASONS)}")


def blob_target(store: Any, text: str) -> list[tuple[str, str]]:
    """One named blob: it must exist in raw, or the replay would queue a request for nothing."""
    name = raw_name(text)
    if not _raw_exists(store, name):
        raise CommandError(
            f"raw/{name} does not exist: nothing to replay (names look like <dataset>/<file>.csv; "
            f"`python -m shared status` lists recent ones)"
        )
    return [(name, "replay")]


def dataset_targets(store: Any, dataset: str, since: datetime | None, until: datetime | None) -> list[tuple[str, str]]:
    """Every raw blob of a dataset that has a contract, landed in [since, until)."""
    known_contract(dataset)
    out = []
    for info in store.list(layout.RAW, f"{dataset}/"):
        if (since and info.last_modified < since) or (until and info.last_modified >= until):
            continue
        if layout.accepted(info.name):
            out.append((info.name, "replay"))
    return out


def status_targets(store: Any, status: str, reason: str | None) -> list[tuple[str, str]]:
    """The blobs whose latest ledger row has this status (and reason), that still exist in raw."""
    from shared.postgres import ledger

    conn = clients.database()
    schema = settings.ledger_schema()
    latest: dict[str, dict[str, Any]] = {}
    for row in ledger.all_rows(conn, schema):
        seen = latest.get(row["source_blob"])
        if seen is None or row["updated_at"] > seen["updated_at"]:
            latest[row["source_blob"]] = row
    out = []
    for blob, row in sorted(latest.items()):
        if row["status"] != status:
            continue
        code = (ledger.get(conn, schema, blob, row["source_etag"]) or {}).get("error_code")
        if reason and code != reason:
            continue
        out.append((blob, f"replay_{status}" + (f":{code}" if code else "")))
    live = {info.name for info in store.list(layout.RAW)} if out else set()
    gone = [b for b, _ in out if b not in live]
    if gone:
        print(f"skipped {len(gone)} blob(s) no longer in raw, e.g. {gone[0]}", file=sys.stderr)
    return [t for t in out if t[0] in live]


def cmd_replay(args: argparse.Namespace) -> int:
    _check_combinations(args)
    if args.poison:
        return replay_poison(args)
    store = clients.blob_store()
    if args.blob:
        targets = blob_target(store, args.blob)
    elif args.dataset:
        targets = dataset_targets(store, args.dataset, args.since, args.until)
    else:
        targets = status_targets(store, args.status, args.reason)
    sender = None if args.dry_run else clients.queue_sender()
    for blob, reason in targets:
        if sender:
            sender.send(layout.INGEST_QUEUE, request(blob, reason.split(":", 1)[0]))
        why = f" ({reason.removeprefix('replay_').replace(':', ': ')})" if reason != "replay" else ""
        print(("would replay " if args.dry_run else "replay requested: ") + f"raw/{blob}{why}")
    if not targets:
        print("nothing to replay: no blob matches")
        return 0
    print(f"{len(targets)} blob(s)" + (" (dry run: nothing sent)" if args.dry_run else f" queued on {layout.INGEST_QUEUE}"))
    return 0


def replay_poison(args: argparse.Namespace) -> int:
    """Move parked messages back (all, one queue, or one message by id); list them first with --dry-run."""
    from shared.storage import poison

    queues = clients.queue_service()
    encoding = settings.message_encoding()
    names = {"all": poison.POISON_QUEUES, "load": (poison.POISON_QUEUES[0],), "ingest": (poison.POISON_QUEUES[1],)}
    names["blobs"] = (poison.BLOB_TRIGGER_POISON,)
    chosen = names[args.poison]
    if args.id:
        _find_message(queues, chosen, args.id, encoding)
    moved = 0
    for queue in chosen:
        if args.dry_run:
            for m in poison.peek(queues, queue, encoding=encoding):
                if not args.id or m.id == args.id:
                    moved += 1
                    print(f"would replay {queue} {m.id}: {m.describe()}")
            continue
        for m in poison.replay(queues, queue, message_id=args.id, encoding=encoding):
            moved += 1
            print(f"replayed {queue} {m.id}: {m.describe()}")
    print(f"{moved} message(s) " + ("would be moved back (dry run)" if args.dry_run else "moved back"))
    return 0


def _find_message(queues: Any, chosen: tuple[str, ...], message_id: str, encoding: str) -> None:
    """Refuse an id that no chosen poison queue holds, before anything is taken from a queue.
    A peek sees at most 32 messages per queue: beyond that, the replay itself looks."""
    from shared.storage import poison

    counts = poison.counts(queues)
    for queue in chosen:
        if any(m.id == message_id for m in poison.peek(queues, queue, encoding=encoding)) or counts.get(queue, 0) > 32:
            return
    raise CommandError(
        f"no message {message_id} in {', '.join(chosen)}: `python -m shared replay --poison --dry-run` lists the ids"
    )


# --- backfill -------------------------------------------------------------------------------------


def cmd_backfill(args: argparse.Namespace) -> int:
    from shared.storage.blobs import BlobStore
    from shared.tools.progress import Progress

    prefix = raw_name(args.prefix)
    blobs = [b.name for b in clients.blob_store().list(layout.RAW, prefix) if layout.accepted(b.name)]
    if not blobs:
        raise CommandError(f"no .csv or .csv.gz blob under raw/{prefix}: check the prefix (it is matched from the start)")
    bar = Progress("backfill", len(blobs), " files")
    if args.queue:
        sender = clients.queue_sender()
        for name in blobs:
            sender.send(layout.INGEST_QUEUE, request(name, "backfill", force=False))
            bar.advance()
        bar.close()
        return 0
    outcomes = backfill_here(BlobStore(), blobs, args.concurrency, bar.advance)  # the app's clients: they retry as it does
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
    from shared.app import lake
    from shared.postgres import ledger
    from shared.postgres.replace import remove_source

    blob = raw_name(args.blob)
    contract = dataset_contract(blob)
    if _raw_exists(clients.blob_store(), blob) and not args.force:
        raise CommandError(f"raw/{blob} still exists: delete it first, or pass --force to remove its rows anyway")
    conn = clients.database()
    schema = settings.ledger_schema()
    if ledger.current(conn, schema, blob) is None:
        last = ledger.latest(conn, schema, blob)
        was = f"its last run was {last['status']}" if last else "the ledger has never seen it"
        raise CommandError(f"{blob} has no loaded rows in PostgreSQL ({was}): nothing to forget")
    removed = remove_source(conn, contract, blob, schema)
    print(f"removed {sum(removed.values()):,} row(s) of {blob}: " + ", ".join(f"{k} {v}" for k, v in removed.items()))
    store = clients.blob_store()
    versions, _ = lake.sync_source(conn, schema, store, contract, blob, by="forget")
    print("lake: " + (", ".join(f"{k} at version {v}" for k, v in versions.items() if v is not None) or "nothing to remove"))
    deleted = forget_outputs(store, contract.dataset, blob)
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


# --- the grace period, said out loud ----------------------------------------------------------------


def grace_note(now: datetime | None = None) -> str | None:
    """How many raw blobs the nightly job just left alone because they are younger than
    ``REPROCESS_GRACE_MINUTES`` and have no outcome yet (``None`` when there are none): a
    person who fires it by hand would otherwise wonder why a fresh file was not sent."""
    from azure.core.exceptions import ResourceNotFoundError

    from shared.postgres import ledger

    grace = settings.reprocess_grace_minutes()
    cutoff = (now or datetime.now(UTC)) - timedelta(minutes=grace)
    try:
        young = [b for b in clients.blob_store().list(layout.RAW) if layout.accepted(b.name) and b.last_modified > cutoff]
    except ResourceNotFoundError:
        return None
    if not young:
        return None
    settled = {(r["source_blob"], r["source_etag"]) for r in ledger.all_rows(clients.database(), settings.ledger_schema())}
    left = [b for b in young if (b.name, b.etag) not in settled]
    if not left:
        return None
    return (
        f"{len(left)} blob(s) younger than {grace:g} min left to their own event (REPROCESS_GRACE_MINUTES), "
        f"e.g. raw/{left[0].name}; `python -m shared replay --blob NAME` runs one now"
    )
