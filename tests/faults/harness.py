"""What the fault tests and the soak share: data, a runner in a subprocess, observations, checks.

Every check here reads the services directly (PostgreSQL with psycopg, Azurite with the SDK)
and compares with ``tests.oracle``, which shares no code with the pipeline.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg

from tests import oracle

ROOT = Path(__file__).resolve().parents[2]
DATASET = "bank_transactions"
HEADER = ["Date", "Domain", "Location", "Value", "Transaction_count"]
DOMAINS = ["RETAIL", "MEDICAL", "PUBLIC", "EDUCATION", "INVESTMENTS"]
VIEW = "analytics.bank_transactions_daily"
BY_FILE = "analytics.bank_transactions_daily_by_file"


# --- data ------------------------------------------------------------------------------------------


def write_bank(
    path: Path, rows: int, *, seed: int, locations: int | None = None, dirty: float = 0.0, duplicates: float = 0.0
) -> Path:
    """A bank CSV of ``rows`` rows. ``locations=None`` makes every row its own (date, domain,
    location) key, so the aggregates are as large as the file and a load's COPY takes time; a
    small number makes files that overlap on their keys. ``dirty`` rows break a rule;
    ``duplicates`` rows repeat an earlier row exactly."""
    rng = random.Random(seed)
    start = date(2022, 1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    written: list[list[str]] = []
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for i in range(rows):
            if written and duplicates and rng.random() < duplicates:
                out.writerow(rng.choice(written))
                continue
            day = start + timedelta(days=rng.randrange(365))
            where = f"Loc-{seed}-{i}" if locations is None else f"Town {rng.randrange(locations)}"
            value, count = str(rng.randrange(1, 10**7)), str(rng.randrange(1, 500))
            if dirty and rng.random() < dirty:
                value = rng.choice(["", "n/a", "-5"])
            row = [f"{day.month}/{day.day}/{day.year}", rng.choice(DOMAINS), where, value, count]
            out.writerow(row)
            if duplicates:
                written.append(row)
    return path


# --- observations ----------------------------------------------------------------------------------


def view_rows(dsn: str) -> set[tuple[Any, ...]]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            f"SELECT txn_date, domain, location, total_value, transaction_count, record_count FROM {VIEW}"
        ).fetchall()
    assert len(rows) == len(set(rows)), "the view has duplicate keys"
    return set(rows)


def ledger(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        if not conn.execute("SELECT to_regclass('pipeline.ledger') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
            return []
        cur = conn.execute("SELECT * FROM pipeline.ledger ORDER BY source_blob, updated_at")
        cols = [d.name for d in cur.description or []]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def rows_of_source(dsn: str, blob: str) -> int:
    """Rows of one source in the per-file table (0 when the table does not exist yet)."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        if not conn.execute(f"SELECT to_regclass('{BY_FILE}') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
            return 0
        return conn.execute(f"SELECT count(*) FROM {BY_FILE} WHERE _source_blob = %s", (blob,)).fetchone()[0]  # type: ignore[index]


@dataclass
class Copy:
    pid: int
    query: str
    seen_at: float


def wait_for_copy(dsn: str, dbname: str, timeout: float, *, alive: Callable[[], bool] = lambda: True) -> Copy:
    """Poll ``pg_stat_activity`` until the pipeline runs a COPY in ``dbname``; return its backend."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid, query FROM pg_stat_activity WHERE datname = %s AND application_name = 'csv-pipeline'"
                " AND state = 'active' AND query ILIKE 'COPY %%'",
                (dbname,),
            ).fetchone()
            if row:
                return Copy(row[0], row[1], time.monotonic())
            if not alive():
                raise AssertionError("the runner ended before any COPY was seen")
            time.sleep(0.01)
    raise TimeoutError(f"no COPY seen in {dbname} within {timeout} s")


def backend_gone(dsn: str, pid: int, timeout: float = 30.0) -> bool:
    """True once the server has noticed that a backend's client is gone and ended it."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 0:  # type: ignore[index]
                return True
            time.sleep(0.05)
    return False


# --- storage ---------------------------------------------------------------------------------------


def blob_service(connection_string: str, **options: Any) -> Any:
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(connection_string, **options)


def queue_service(connection_string: str, **options: Any) -> Any:
    from azure.storage.queue import QueueServiceClient

    return QueueServiceClient.from_connection_string(connection_string, **options)


def ensure_containers(service: Any) -> None:
    from azure.core.exceptions import ResourceExistsError

    for name in ("raw", "curated", "quarantine"):
        with contextlib.suppress(ResourceExistsError):
            service.create_container(name)


def upload(service: Any, name: str, data: bytes) -> str:
    """Drop a blob into raw; returns its ETag (unquoted), the version's identity in the ledger."""
    ensure_containers(service)
    result = service.get_blob_client("raw", name).upload_blob(data, overwrite=True)
    return str(result["etag"]).strip('"')


def names(service: Any, container: str, prefix: str = "") -> list[str]:
    client = service.get_container_client(container)
    return sorted(b.name for b in client.list_blobs(name_starts_with=prefix or None)) if client.exists() else []


def poison_messages(connection_string: str) -> dict[str, list[str]]:
    """Every message in a poison queue, decoded, by queue."""
    from shared.storage import queues as queue_messages

    queues = queue_service(connection_string)
    out: dict[str, list[str]] = {}
    for q in queues.list_queues():
        if q.name.endswith("-poison"):
            msgs = queues.get_queue_client(q.name).peek_messages(max_messages=32)
            out[q.name] = [queue_messages.decode_message(m.content) for m in msgs]
    return out


def run_consistency(service: Any, dataset: str = DATASET) -> tuple[dict[str, str], list[str]]:
    """Every run in ``curated``: 'published' (its manifest and every output it names are there
    and readable) or 'unpublished' (no manifest). Returns the runs and the problems found: a
    manifest naming a missing or unreadable output is a half-published run."""
    import io

    import polars as pl

    runs: dict[str, str] = {}
    problems: list[str] = []
    curated = service.get_container_client("curated")
    if not curated.exists():
        return runs, problems
    listed = [b.name for b in curated.list_blobs(name_starts_with=f"{dataset}/")]
    present = set(listed)
    # the lake's tables are Delta's: a file there belongs to a table version, not to a run's
    # publication (committed, removed and kept for time travel, or vacuumed); read the tables
    blobs = [name for name in listed if "/tables/" not in name]
    for name in blobs:
        run = name.rsplit("/", 1)[-1].split(".", 1)[0]
        runs.setdefault(run, "unpublished")
    quarantine = service.get_container_client("quarantine")
    if quarantine.exists():  # <dataset>/<source key>/<run>/rejects.parquet: a run's output too
        for b in quarantine.list_blobs(name_starts_with=f"{dataset}/"):
            if b.name.endswith("/rejects.parquet"):
                runs.setdefault(b.name.rsplit("/", 2)[-2], "unpublished")
    for name in blobs:
        if "/manifests/" not in name:
            continue
        run = name.rsplit("/", 1)[-1].split(".", 1)[0]
        runs[run] = "published"
        doc = json.loads(curated.get_blob_client(name).download_blob().readall())
        refs = [doc["outputs"]["clean"], doc["outputs"]["report"], *doc["outputs"]["aggregates"].values()]
        refs += list(doc["outputs"].get("distinct_values", {}).values())
        if "rejects" in doc["outputs"]:
            refs.append(doc["outputs"]["rejects"])
        for ref in refs:
            where = f"{ref['container']}/{ref['name']}"
            if ref["container"] == "curated" and ref["name"] not in present:
                problems.append(f"run {run}: its manifest names {where}, which is missing")
                continue
            try:
                data = service.get_blob_client(ref["container"], ref["name"]).download_blob().readall()
            except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
                problems.append(f"run {run}: {where} cannot be read: {type(exc).__name__}")
                continue
            if ref["name"].endswith(".parquet"):
                try:
                    pl.read_parquet(io.BytesIO(data))
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"run {run}: {where} is not a whole Parquet file: {exc}")
    return runs, problems


# --- expectations ----------------------------------------------------------------------------------


def expected(paths: Iterable[Path]) -> oracle.Expected:
    total = oracle.Expected()
    for path in paths:
        total = total.add(oracle.bank(path))
    return total


# --- the runner in a subprocess ---------------------------------------------------------------------


def runner_env(connection_string: str, dsn: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DataStorage": connection_string,
            "AzureWebJobsStorage": connection_string,
            "POSTGRES_DSN": dsn,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@dataclass
class RunnerProcess:
    """A runner in its own process, so that a test can SIGKILL it mid-work. Its stdout (the
    runner's one line per invocation) goes to ``log``."""

    env: dict[str, str]
    log: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    rss_kb: list[tuple[float, int]] = field(default_factory=list)
    _fh: Any = None

    @classmethod
    def cli(cls, env: dict[str, str], log: Path, *, workers: int = 2, once: bool = True) -> RunnerProcess:
        """``python -m shared run``: the project's own command."""
        args = [sys.executable, "-m", "shared", "run", "--workers", str(workers)] + (["--once"] if once else [])
        return cls(env, log, args)

    @classmethod
    def fast_retry(
        cls,
        env: dict[str, str],
        log: Path,
        *,
        workers: int = 2,
        once: bool = False,
        retry_after: float = 1.0,
        storage_retries: int | None = None,
    ) -> RunnerProcess:
        """``tests/faults/runner.py``: the same LocalHost, with a short ``visibilityTimeout``."""
        args = [sys.executable, "-m", "tests.faults.runner", "--workers", str(workers), "--retry-after", str(retry_after)]
        if storage_retries is not None:
            args += ["--storage-retries", str(storage_retries)]
        return cls(env, log, args + (["--once"] if once else []))

    def start(self) -> RunnerProcess:
        self._fh = open(self.log, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=self._fh, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample_rss(self) -> int | None:
        """VmRSS of the process now (kB), remembered in ``rss_kb``."""
        if not self.alive():
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb = int(line.split()[1])
                    self.rss_kb.append((time.monotonic(), kb))
                    return kb
        except (FileNotFoundError, ProcessLookupError):
            return None
        return None

    def kill(self) -> int:
        """SIGKILL: no cleanup, no last words, as when a worker is recycled or crashes."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.wait(30)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.wait(30)

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._fh:
            self._fh.close()
            self._fh = None
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def running(runner: RunnerProcess) -> Iterator[RunnerProcess]:
    """Start a runner; whatever happens, it is gone afterwards."""
    runner.start()
    try:
        yield runner
    finally:
        if runner.alive():
            runner.kill()
        elif runner._fh:
            runner.wait()


class Sampler(threading.Thread):
    """Samples the RSS of whichever runner process ``current()`` returns, every ``every`` s."""

    def __init__(self, current: Callable[[], RunnerProcess | None], every: float = 0.5) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.current, self.every = current, every
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, pid, kB)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            runner = self.current()
            if runner is not None:
                kb = runner.sample_rss()
                if kb is not None:
                    self.samples.append((time.monotonic(), runner.pid, kb))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


# --- storage clients that give up sooner --------------------------------------------------------


def impatient_storage(retries: int = 0, backoff: float = 0.5) -> Callable[[], None]:
    """Make the app's storage clients (``shared.storage.accounts.blob_service``/``queue_service``) retry
    ``retries`` times after ``backoff`` s instead of the SDK's 15 s, 18 s, 24 s. The SDK's own
    retries ride out a storage restart of a few seconds inside a single request; with fewer of
    them the same restart reaches the functions and the runner, as a longer outage would, and a
    test can see what they do about it in seconds. Returns the undo."""
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    from shared.app import settings
    from shared.storage import accounts

    patience = {"retry_total": retries, "initial_backoff": backoff, "increment_base": 2, "random_jitter_range": 0}
    originals = accounts.blob_service, accounts.queue_service

    def blob_service(connection: str = accounts.DATA_CONNECTION, env: Any = None, **options: Any) -> Any:
        return BlobServiceClient.from_connection_string(settings.env(connection) or "", **{**options, **patience})

    def queue_service(connection: str = accounts.DATA_CONNECTION, env: Any = None, **options: Any) -> Any:
        return QueueServiceClient.from_connection_string(settings.env(connection) or "", **{**options, **patience})

    accounts.blob_service, accounts.queue_service = blob_service, queue_service  # type: ignore[assignment]

    def undo() -> None:
        accounts.blob_service, accounts.queue_service = originals  # type: ignore[assignment]

    return undo
