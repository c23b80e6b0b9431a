"""End to end: from "upload complete" to "rows queryable in the view", with the local runner.

A private Azurite (free ports, a temp folder) and a throwaway PostgreSQL database are started
for the run. The local runner (``shared.tools.runner.LocalHost`` over ``function_app.app``, as
``python -m shared run`` starts it) runs in its own process, started and warmed before the first
upload, like a warm Function instance. For each file this process uploads the CSV into
``raw/bank_transactions/``, starts the clock when the upload returns (the blob is committed),
then polls PostgreSQL every 10 ms and stops the clock when the file's ledger row says
``loaded`` and the by-file table holds all of its groups; the view is then checked to return
the rows of every file loaded so far. The first file is a small warm-up (it creates the tables
and pays the lazy imports); the figures are the median of the full-size runs.

    python -m bench.e2e runner <stop-file>     # the runner process (started by ``bench``)
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import common, measure
from bench.pg import throwaway_database
from shared.tools.azurite import Azurite

POLL_SECONDS = 0.01
WARMUP_ROWS = 1_000


def runner_main(stop_file: Path) -> int:
    """Run the app's functions until ``stop_file`` appears; events go to stdout with a timestamp."""
    logging.basicConfig(level=logging.WARNING)
    import function_app
    from shared.tools.runner import LocalHost

    host = LocalHost(function_app.app, workers=2, on_event=lambda text: print(f"{time.time():.3f} {text}", flush=True))
    host.prepare()
    print(f"READY {os.getpid()}", flush=True)
    thread = threading.Thread(target=host.run, kwargs={"until_idle": False}, name="runner", daemon=True)
    thread.start()
    while not stop_file.exists() and thread.is_alive():
        time.sleep(0.05)
    host.stop()
    thread.join(timeout=60)
    return 0


# --- the benchmark -----------------------------------------------------------------------------


def _wait_ready(log_path: Path, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        for line in text.splitlines():
            if line.startswith("READY "):
                return int(line.split()[1])
        if proc.poll() is not None:
            raise RuntimeError(f"the runner exited before it was ready:\n{text[-3000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"the runner was not ready after {timeout} s")


def _poll_loaded(conn: Any, blob: str, timeout: float = 600.0) -> dict[str, Any]:
    """Poll until the blob's ledger row is ``loaded`` and its groups are all in the by-file table."""
    import psycopg

    query = """
        SELECT l.status, l.groups, l.timings, l.ingested_at, l.rows_valid, l.error_code, l.error_detail,
               (SELECT count(*) FROM analytics.bank_transactions_daily_by_file b WHERE b._source_blob = l.source_blob)
        FROM pipeline.ledger l WHERE l.source_blob = %s ORDER BY l.updated_at DESC LIMIT 1
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            row = conn.execute(query, (blob,)).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None  # the first load has not created the tables yet
        if row is not None:
            status, groups, timings, ingested_at, rows_valid, code, detail, in_table = row
            if status == "loaded" and in_table == (groups or {}).get("daily"):
                return {"at": time.time(), "timings": timings or {}, "ingested_at": ingested_at, "rows_valid": rows_valid,
                        "groups": (groups or {}).get("daily")}  # fmt: skip
            if status in ("rejected", "superseded"):
                raise RuntimeError(f"{blob} was {status}: {code} {detail}")
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"{blob} was not loaded after {timeout} s")


def bench(rows: int, repeat: int, *, seed: int = common.DEFAULT_SEED, settle: float | None = None) -> dict[str, Any]:
    import psycopg
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    from shared.core import layout
    from shared.storage.blobs import BlobStore
    from shared.storage.queues import QueueSender

    big = common.dataset(rows, seed)
    small = common.dataset(WARMUP_ROWS, seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    azurite = Azurite(tmp / "azurite")
    azurite.start()
    runner: subprocess.Popen[bytes] | None = None
    runner_pid: int | None = None
    stop_file, log_path, rss_path = tmp / "stop", tmp / "runner.log", tmp / "runner.rss"
    try:
        with throwaway_database("bench_e2e") as dsn:
            cs = azurite.connection_string
            env = os.environ | {
                "DataStorage": cs, "AzureWebJobsStorage": cs, "POSTGRES_DSN": dsn, "PIPELINE_LEDGER_SCHEMA": "pipeline",
                "REPROCESS_SCHEDULE": "0 0 2 * * *", "PYTHONPATH": str(common.ROOT),
            }  # fmt: skip
            blobs = BlobServiceClient.from_connection_string(cs)
            BlobStore(blobs).ensure_containers(layout.CONTAINERS)
            QueueSender(QueueServiceClient.from_connection_string(cs)).ensure_queues(layout.QUEUES)
            cmd = [sys.executable, "-m", "bench.e2e", "runner", str(stop_file)]
            if measure.METHOD.startswith(measure.TIME):
                cmd = [measure.TIME, "-f", "%M", "-o", str(rss_path), *cmd]
            with open(log_path, "wb") as log:
                runner = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=common.ROOT, env=env)
            runner_pid = _wait_ready(log_path, runner)
            conn = psycopg.connect(dsn, autocommit=True)
            runs: list[dict[str, Any]] = []
            warmup: dict[str, Any] = {}
            files = [small] + [big] * repeat
            for i, path in enumerate(files):
                common.warm_cache(path)
                busy = common.settle(settle) if settle is not None else None
                blob = f"bank_transactions/e2e-{i}-{path.stem}.csv"
                with open(path, "rb") as fh:
                    blobs.get_blob_client(layout.RAW, blob).upload_blob(fh, overwrite=True, max_concurrency=2)
                uploaded_at, started = time.time(), time.perf_counter()
                done = _poll_loaded(conn, blob)
                seconds = time.perf_counter() - started
                total = conn.execute("SELECT count(*), sum(record_count) FROM analytics.bank_transactions_daily").fetchone()
                expected = conn.execute("SELECT sum(rows_valid) FROM pipeline.ledger WHERE status = 'loaded'").fetchone()[0]
                if not total[0] or int(total[1]) != int(expected):
                    raise RuntimeError(f"the view holds {total[1]} records, the loaded files {expected}")
                timings = done["timings"]
                ingested = done["ingested_at"].timestamp() if isinstance(done["ingested_at"], datetime) else None
                record = {
                    "file_rows": rows if path == big else WARMUP_ROWS,
                    "seconds": seconds,
                    "ingest": timings.get("total"),
                    "stages": timings,
                    "trigger_wait": (ingested - timings.get("total", 0) - uploaded_at) if ingested else None,
                    "to_loaded": (done["at"] - ingested) if ingested else None,
                    "groups": done["groups"],
                    "view_rows": int(total[0]),
                    "busy_before": busy,
                }
                common.log(
                    f"  e2e {'warm-up' if i == 0 else f'run {i}'}: {record['file_rows']:,} rows, upload complete → queryable "
                    f"in {seconds:.2f} s (trigger wait {record['trigger_wait'] or 0:.2f}, ingest {record['ingest'] or 0:.2f}, "
                    f"ingest done → loaded {record['to_loaded'] or 0:.2f})"
                )
                if i == 0:
                    warmup = record
                else:
                    runs.append(record)
            conn.close()
            stop_file.touch()
            runner.wait(timeout=120)
            runner = None
            events = log_path.read_text(errors="replace")
    finally:
        if runner is not None:  # something failed: end the runner we started
            stop_file.touch()
            try:
                runner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                if runner_pid:
                    try:
                        os.kill(runner_pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                runner.kill()
                runner.wait()
        azurite.stop()
    rss = rss_path.read_text().strip().splitlines() if rss_path.exists() else []
    runner_rss = int(rss[-1]) / 1024 if rss and rss[-1].isdigit() else None
    shutil.rmtree(tmp, ignore_errors=True)
    load_lines = [ln for ln in events.splitlines() if " load: " in ln and " done in " in ln]
    load_seconds = [float(ln.rsplit(" done in ", 1)[1].split()[0]) for ln in load_lines]
    stage_keys = [k for k in runs[0]["stages"] if k != "total"] if runs else []
    doc: dict[str, Any] = {
        "kind": "e2e",
        "rows": rows,
        "bytes": big.stat().st_size,
        "repeat": repeat,
        "runs": runs,
        "warmup": warmup,
        "median": common.median([r["seconds"] for r in runs]),
        "median_trigger_wait": common.median([r["trigger_wait"] for r in runs if r["trigger_wait"] is not None]),
        "median_ingest": common.median([r["ingest"] for r in runs if r["ingest"] is not None]),
        "median_to_loaded": common.median([r["to_loaded"] for r in runs if r["to_loaded"] is not None]),
        "stages": {k: common.median([r["stages"][k] for r in runs if k in r["stages"]]) for k in stage_keys},
        "load_function_seconds": load_seconds[1:],
        "runner_peak_rss_mib": runner_rss,
        "notes": [
            f"Warm-up file ({WARMUP_ROWS:,} rows, first after the runner started: creates the tables, pays the lazy "
            f"imports): {warmup.get('seconds', float('nan')):.2f} s, not in the median",
            "The runner polls `raw` and the queues every 0.2 s (its default, as `python -m shared run`); in Azure the "
            "blob trigger is an Event Grid event and the queue trigger polls with backoff up to `maxPollingInterval` "
            "(2 s in host.json), so the waits differ there",
            "upload → ingest starts = the runner noticing the blob and opening it; ingest done → loaded = the queue "
            "message, the load function and the commit"
            + (f" (the load function itself: median {common.median(load_seconds[1:]):.2f} s)" if load_seconds[1:] else ""),
        ]
        + ([f"Runner process peak RSS (2 workers, every file): {runner_rss:,.0f} MiB"] if runner_rss else [])
        + (
            [f"Other work on the machine just before each upload: max {max(shares):.0%} of the CPU"]
            if (shares := [r["busy_before"] for r in runs if r.get("busy_before") is not None])
            else []
        ),
        **common.stamp(),
    }
    return doc


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "runner":
        sys.exit(runner_main(Path(sys.argv[2])))
    print("usage: python -m bench.e2e runner <stop-file>", file=sys.stderr)
    sys.exit(2)
