"""The command line: ``python -m shared <command>`` (``--help`` lists every command).

Settings come from the environment; ``local.settings.json`` (as ``func start`` reads it) fills in
what the environment does not set. Every expected failure ends in one line on stderr and an exit
code of its kind (``shared.tools.failures``); only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from shared.app import settings
from shared.tools import clients, failures
from shared.tools.checks import at_least, known_contract, local_csv
from shared.tools.failures import USAGE, CommandError
from shared.tools.progress import Progress

DESCRIPTION = """\
The CSV pipeline's command line: run the functions locally, put files into raw, see what
happened, run things again, and write and prove contracts."""


def load_local_settings(path: Path | None = None) -> None:
    """Fill the environment from local.settings.json (or its template), never overriding."""
    for candidate in (
        [path] if path else [settings.APP_ROOT / "local.settings.json", settings.APP_ROOT / "local.settings.json.template"]
    ):
        if candidate and candidate.exists():
            try:
                values = json.loads(candidate.read_text()).get("Values", {})
            except ValueError as exc:
                raise CommandError(f"{candidate} is not valid JSON ({exc}); fix it or remove it") from exc
            for key, value in values.items():
                os.environ.setdefault(key, str(value))
            return


# --- commands ---------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    from shared.tools import samples

    generator = samples.GENERATORS.get(args.dataset)
    if generator is None:
        raise CommandError(f"no sample generator for {args.dataset!r}; known: {', '.join(samples.GENERATORS)}")
    started = time.monotonic()
    try:
        path = generator(args.out, args.rows, seed=args.seed)
    except OSError as exc:  # the folder does not exist or is not writable: the person's to fix
        raise CommandError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    print(
        f"wrote {args.rows:,} rows of {args.dataset} to {path} ({path.stat().st_size / 1e6:,.1f} MB)"
        f" in {time.monotonic() - started:.1f} s"
    )
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from shared.app import contracts, ingest
    from shared.core import layout, report
    from shared.storage.blobs import FolderStore

    src = local_csv(args.file).resolve()
    known_contract(args.dataset)
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

    store = store or BlobStore(clients.blob_service())
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
    from shared.core import layout

    path = local_csv(args.file)
    known_contract(args.dataset)
    name = f"{args.dataset}/{args.name or path.name}"
    if not layout.accepted(name):
        raise CommandError(f"--name {args.name} does not end in .csv or .csv.gz: the pipeline would refuse the blob")
    upload(path, name)
    return 0


def progress_printer() -> Callable[[str], None]:
    """Where the runner's own lines go: stdout as text, or JSON log lines with
    ``PIPELINE_LOG_FORMAT=json`` (so that one stream carries both, machine-readable)."""
    from shared.app import logs

    if logs.json_format():
        log = logging.getLogger("pipeline.runner")
        return lambda text: log.info(text.strip())
    return lambda text: print(text, flush=True)


def _host(workers: int, say: Callable[[str], None]) -> Any:
    from shared.tools.runner import LocalHost

    return LocalHost.of_function_app(workers=workers, on_event=say)


def cmd_run(args: argparse.Namespace) -> int:
    say = progress_printer()
    host = _host(args.workers, say)
    timers = [s.name for s in host.specs if s.kind == "timerTrigger"]
    for name in args.fire or []:
        if name not in timers:
            raise CommandError(f"--fire {name}: not a timer function of the app (timers: {', '.join(timers)})")
        host.fire(name)
        if name == "reprocess":
            from shared.tools import operations

            note = operations.grace_note()
            if note:
                say(f"  reprocess: {note}")
    try:
        stats = host.run(until_idle=args.once)
    except KeyboardInterrupt:
        host.stop()
        return failures.INTERRUPTED
    say(f"{stats.invocations} invocations, {stats.failures} failed, {stats.poisoned} sent to poison queues")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from shared.core import layout
    from shared.postgres import ledger
    from shared.storage.blobs import BlobStore
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
    store = BlobStore(clients.blob_service())
    store.ensure_containers(layout.CONTAINERS)
    clients.queue_sender().ensure_queues(layout.QUEUES)
    host = _host(args.workers, progress_printer())
    host.prepare()
    host.run(until_idle=True)  # settle anything left from an earlier demo first
    blob = f"bank_transactions/demo-{time.strftime('%Y%m%dT%H%M%S')}.csv"
    upload(sample, blob, store)
    landed = time.monotonic()
    host.run(until_idle=True)
    took = time.monotonic() - landed
    conn = clients.database(ensure_ledger=False)
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


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake on one line: what is wrong and where the help is (argparse's own
    prints the whole usage first, which buries the line that matters)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in failures.EXIT_CODES.items())
    return (
        f"exit codes:\n{codes}\n\nSettings come from the environment, then local.settings.json (as func start reads it).\n"
        "Logs: PIPELINE_LOG_LEVEL (default INFO), PIPELINE_LOG_FORMAT=json for JSON lines."
    )


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m shared", description=DESCRIPTION, epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    r = sub.add_parser("run", help="the local runner: fire the app's functions against Azurite (the Functions host stand-in)")
    r.add_argument("--once", action="store_true", help="process everything pending, then exit")
    r.add_argument("--workers", type=at_least(1), default=2, help="invocations at once (default 2)")
    r.add_argument("--fire", action="append", metavar="FUNCTION", help="fire a timer function first (e.g. reprocess)")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="the main job end to end: generate a sample, drop it into raw, run until loaded")
    d.add_argument("--rows", type=at_least(1), default=1_000_000, help="rows of the sample (default 1,000,000)")
    d.add_argument("--seed", type=int, default=7, help="seed of the sample generator (default 7)")
    d.add_argument("--workers", type=at_least(1), default=2, help="the runner's invocations at once (default 2)")
    d.add_argument("--data-dir", default=".data/samples", help="where the sample is written and reused (default .data/samples)")
    d.set_defaults(func=cmd_demo)

    u = sub.add_parser("upload", help="put a local .csv or .csv.gz into raw/<dataset>/, with a progress bar")
    u.add_argument("file", help="the local file (.csv or .csv.gz)")
    u.add_argument("--dataset", required=True, help="the dataset folder; it must have a contract")
    u.add_argument("--name", help="blob name under raw/<dataset>/ (default: the file name)")
    u.set_defaults(func=cmd_upload)

    from shared.tools import contract_commands, operations

    operations.register(sub)  # status, replay, backfill, forget

    pr = sub.add_parser("process", help="run the transform on a local CSV with no Azure at all, outputs to a folder")
    pr.add_argument("file", help="the local file (.csv or .csv.gz)")
    pr.add_argument("--dataset", required=True, help="the dataset whose contract to apply")
    pr.add_argument("--out", default=".data/local", help="the folder standing in for the storage account (default .data/local)")
    pr.add_argument("--name", help="blob name under raw/<dataset>/ (default: the file name)")
    pr.set_defaults(func=cmd_process)

    g = sub.add_parser("generate", help="write a deterministic sample CSV of a bundled dataset")
    g.add_argument("--dataset", default="bank_transactions", help="which generator (default bank_transactions)")
    g.add_argument("--rows", type=at_least(1), default=1_000_000, help="rows to write (default 1,000,000)")
    g.add_argument("--seed", type=int, default=7, help="seed: the same seed writes the same file (default 7)")
    g.add_argument("--out", required=True, help="the file to write")
    g.set_defaults(func=cmd_generate)

    contract_commands.register(sub)  # infer, check, report
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an expected failure becomes one line on stderr and its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # its mistakes are one line already (Parser.error)
    try:
        load_local_settings()
        _configure_logs()
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return failures.INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return failures.BROKEN_PIPE
    except Exception as exc:
        known = failures.explain(exc)
        if known is None:
            raise  # a bug: its traceback is what someone needs to fix it
        code, line = known
        print(f"{parser.prog} {args.command}: {line}", file=sys.stderr)
        return code


def _configure_logs() -> None:
    from shared.app import logs

    try:
        logs.configure()
    except ValueError as exc:  # logging's "Unknown level"
        raise CommandError(f"PIPELINE_LOG_LEVEL: {exc}; use DEBUG, INFO, WARNING or ERROR") from exc


def _quiet_stdout() -> None:
    """The reader went away (``| head``): point stdout at /dev/null so that the interpreter's
    final flush does not print a second error about the same closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
