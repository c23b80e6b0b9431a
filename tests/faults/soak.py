"""A bounded soak: hundreds of files over a few minutes, faults at random points, a fixed seed.

    python -m tests.faults.soak --files 400 --minutes 5 --seed 42      (or: scripts/soak)

It starts a private PostgreSQL cluster, a private Azurite and the local runner in a subprocess
(``tests/faults/runner.py``: the app's functions, a one-second retry delay, a 3 s message
lease), then drops ``--files`` bank files into ``raw`` at random moments while injecting faults
at other random moments, all drawn from ``--seed``:

    runner_kill         SIGKILL the runner, start a new one a moment later
    postgres_restart    crash PostgreSQL (pg_ctl stop -m immediate) and start it again
    azurite_restart     stop Azurite and start it again
    duplicate_delivery  send a published run's load request again
    reupload            replace a blob with new content (the new version must win)
    bad_file            drop an empty, binary or column-less file (quarantined, never retried forever)

Then it waits until everything has settled (poison messages, if a fault parked any, are
replayed once their cause is gone) and checks:

* the view equals the oracle's sums over the latest content of every blob (``tests/oracle.py``);
* every raw blob version the pipeline saw has exactly one terminal ledger outcome (loaded,
  rejected with the expected code, superseded), and the current version of each blob is the one
  loaded; the per-file table holds exactly the loaded run of each blob;
* ``curated`` holds one published run per blob and no run whose manifest names a missing output;
* no poison message without a fault that explains it (an outage longer than the retries);
* memory is flat: the longest-lived runner process peaks, in the last quarter of its life, at
  most ``--flat-ratio`` (1.25) times its peak in the first quarter; a leak grows within a
  process. (The runner is restarted by faults: comparing the soak's two halves instead would
  compare a process killed while still warming up, at 109 MB, with a warm one, at 177 MB, and
  call that growth. The halves are used only when no process lived long enough to tell.)

It prints its figures (files, rows, faults by kind, retries, poison, RSS) and exits 1 if a check
failed. ``tests/test_faults.py`` runs a short version of it in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import oracle
from tests.faults import harness
from tests.faults.cluster import BreakableAzurite, PgCluster

KINDS = ("runner_kill", "postgres_restart", "azurite_restart", "duplicate_delivery", "reupload", "bad_file")
WEIGHTS = (2, 2, 2, 3, 3, 2)
BAD_FILES = (
    (b"", "empty_file"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "not_csv"),
    (b"Date,Domain,Location,Transaction_count\n1/1/2022,RETAIL,Goa,3\n", "missing_columns"),
)
INFRASTRUCTURE = ("runner_kill", "postgres_restart", "azurite_restart")
MB = 1024
LONG_ENOUGH_S = 20.0
"""A runner process that lived this long shows, from its first quarter to its last, whether it grows."""
PROBE = "soak-probe"


@dataclass
class Config:
    files: int = 400
    minutes: float = 5.0
    seed: int = 42
    workers: int = 2
    faults_per_minute: float = 10.0
    min_rows: int = 200
    max_rows: int = 3_000
    drain_seconds: float = 300.0
    flat_ratio: float = 1.25
    lease_seconds: int = 3
    azurite_debug: bool = False


@dataclass
class Version:
    blob: str
    etag: str
    path: Path | None  # None: a bad file
    code: str | None = None  # the refusal a bad file must get


@dataclass
class Report:
    config: Config
    seconds: float = 0.0
    versions: list[Version] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    fault_log: list[tuple[float, str, str]] = field(default_factory=list)
    runner: Counter[str] = field(default_factory=Counter)
    runners_started: int = 0
    causes: Counter[str] = field(default_factory=Counter)
    emulator: Counter[str] = field(default_factory=Counter)
    poison: list[str] = field(default_factory=list)
    rss: list[tuple[float, int, int]] = field(default_factory=list)
    expected: oracle.Expected | None = None
    curated: Counter[str] = field(default_factory=Counter)
    never_ingested: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def memory(self) -> dict[str, Any]:
        """RSS figures; 'flat' compares the peaks of the two halves of the soak (see the module doc)."""
        if not self.rss:
            return {"samples": 0}
        t0 = self.rss[0][0]
        middle = t0 + (self.rss[-1][0] - t0) / 2
        first = [kb for t, _, kb in self.rss if t < middle]
        second = [kb for t, _, kb in self.rss if t >= middle]
        minutes: dict[int, int] = {}
        for t, _, kb in self.rss:
            minute = int((t - t0) // 60)
            minutes[minute] = max(minutes.get(minute, 0), kb)
        by_pid: dict[int, list[tuple[float, int]]] = {}
        for t, pid, kb in self.rss:
            by_pid.setdefault(pid, []).append((t, kb))
        longest = max(by_pid.values(), key=lambda series: series[-1][0] - series[0][0])
        span = longest[-1][0] - longest[0][0]
        early = [kb for t, kb in longest if t - longest[0][0] <= span / 4]
        late = [kb for t, kb in longest if t - longest[0][0] >= span * 3 / 4]
        return {
            "samples": len(self.rss),
            "processes": len(by_pid),
            "longest_s": span,
            "longest_first_quarter_max_mb": max(early) / MB,
            "longest_last_quarter_max_mb": max(late) / MB,
            "median_mb": statistics.median(kb for _, _, kb in self.rss) / MB,
            "max_mb": max(kb for _, _, kb in self.rss) / MB,
            "first_half_max_mb": max(first, default=0) / MB,
            "second_half_max_mb": max(second, default=0) / MB,
            "per_minute_max_mb": [round(minutes[m] / MB) for m in sorted(minutes)],
        }

    def render(self) -> str:
        c = self.config
        good = [v for v in self.versions if v.path is not None]
        bad = [v for v in self.versions if v.path is None]
        exp = self.expected or oracle.Expected()
        mem = self.memory()
        lines = [
            f"soak: seed {c.seed}, {c.files} files over {c.minutes:g} min, {c.workers} workers, {self.seconds:.0f} s in all",
            f"files     {c.files} uploaded, {self.faults['reupload']} re-uploaded with new content, {len(bad)} bad files:"
            f" {len(self.versions)} blob versions ({len(good)} good), {self.never_ingested} replaced before any event",
            f"rows      {exp.read:,} read in the latest versions: {exp.valid:,} valid, {exp.rejected:,} rejected,"
            f" {exp.duplicate:,} duplicate; {len(exp.daily):,} keys in the view",
            "faults    " + " · ".join(f"{k} {self.faults[k]}" for k in KINDS) + f" ({sum(self.faults.values())} in all)",
            f"runner    {self.runners_started} processes; {self.runner['done']} invocations done, {self.runner['failed']} failed"
            f" (each retried), {self.runner['redelivered']} messages done on a later delivery,"
            f" {self.runner['outages']} storage outages waited out, {self.runner['bookkeeping']} bookkeeping failures"
            + (
                " (failures by cause: " + ", ".join(f"{k} {n}" for k, n in self.causes.most_common()) + ")" if self.causes else ""
            ),
            f"poison    {len(self.poison)} message(s)" + (": " + "; ".join(self.poison) if self.poison else ""),
            "emulator  " + (", ".join(f"{k} ({n})" for k, n in self.emulator.items()) or "no Azurite failure of its own"),
            f"curated   {self.curated['published']} published runs, {self.curated['unpublished']} unpublished leftovers"
            f" (no manifest), {self.curated['half']} half-published",
        ]
        if mem["samples"]:
            lines.append(
                f"memory    RSS of the runner, {mem['samples']} samples over {mem['processes']} processes:"
                f" median {mem['median_mb']:.0f} MB, max {mem['max_mb']:.0f} MB; peak first half"
                f" {mem['first_half_max_mb']:.0f} MB, second half {mem['second_half_max_mb']:.0f} MB;"
                f" per-minute max {mem['per_minute_max_mb']} MB; the longest-lived process ({mem['longest_s']:.0f} s)"
                f" peaked at {mem['longest_first_quarter_max_mb']:.0f} MB in its first quarter and"
                f" {mem['longest_last_quarter_max_mb']:.0f} MB in its last"
            )
        lines.append("result    " + ("PASS" if self.ok else "FAIL"))
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class Soak:
    def __init__(self, config: Config, work: Path, out: Any = print) -> None:
        self.c = config
        self.work = work
        self.out = out
        self.rng = random.Random(config.seed)  # the schedule, the files, the faults' details
        self.pick = random.Random(config.seed + 1)  # which published run to deliver again: depends on timing
        self.report = Report(config)
        self.cluster: PgCluster | None = None
        self.azurite: BreakableAzurite | None = None
        self.runner: harness.RunnerProcess | None = None
        self.runners: list[harness.RunnerProcess] = []
        self.current: dict[str, Version] = {}
        self.started = 0.0

    # --- services ----------------------------------------------------------------------------------

    def start_services(self) -> None:
        self.cluster = PgCluster()  # its own folder under /tmp: the postgres user must reach it
        self.cluster.init().start()
        self.dsn = self.cluster.create_database("soak")
        debug = self.work / "azurite-debug.log" if self.c.azurite_debug else None
        self.azurite = BreakableAzurite(self.work / "azurite", debug_log=debug)
        self.azurite.start()
        patience = {"retry_total": 3, "initial_backoff": 0.5, "increment_base": 2}  # ~7 s, not the SDK's ~60 s
        self.blobs = harness.blob_service(self.azurite.connection_string, **patience)
        self.queues = harness.queue_service(self.azurite.connection_string, **patience)
        harness.ensure_containers(self.blobs)
        self.blobs.create_container(PROBE)
        self.env = harness.runner_env(
            self.azurite.connection_string,
            self.dsn,
            PIPELINE_RUNNER_LEASE_SECONDS=str(self.c.lease_seconds),
            PIPELINE_WORK_DIR=str(self.work / "scratch"),
        )
        (self.work / "scratch").mkdir(exist_ok=True)

    def start_runner(self) -> None:
        n = len(self.runners)
        runner = harness.RunnerProcess.fast_retry(
            self.env, self.work / f"runner-{n}.log", workers=self.c.workers, retry_after=1, storage_retries=0
        )
        self.runners.append(runner.start())
        self.runner = runner
        self.report.runners_started += 1

    def close(self) -> None:
        for runner in self.runners:
            with contextlib.suppress(Exception):
                if runner.alive():
                    runner.kill()
                elif runner._fh:
                    runner.wait()
        if self.azurite:
            self.azurite.close()
        if self.cluster:
            self.cluster.close()

    # --- the run -------------------------------------------------------------------------------

    def plan(self) -> list[tuple[float, str, int]]:
        duration = self.c.minutes * 60
        events = [(self.rng.uniform(0, duration * 0.8), "file", i) for i in range(self.c.files)]
        count = max(len(KINDS), round(self.c.faults_per_minute * self.c.minutes))
        kinds = list(KINDS) + self.rng.choices(KINDS, WEIGHTS, k=count - len(KINDS))
        self.rng.shuffle(kinds)
        events += [(self.rng.uniform(duration * 0.05, duration * 0.9), kind, 0) for kind in kinds]
        return sorted(events)

    def run(self) -> Report:
        self.started = time.monotonic()
        try:
            self.start_services()
            self.start_runner()
            sampler = harness.Sampler(lambda: self.runner, every=0.5)
            sampler.start()
            try:
                for at, what, i in self.plan():
                    delay = self.started + at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    if what == "file":
                        self.drop_file(i)
                    else:
                        self.inject(what)
                self.drain()
            finally:
                sampler.stop()
                self.report.rss = sampler.samples
            self.check()
        except Exception as exc:  # noqa: BLE001 - a soak that breaks reports why, with its figures
            import traceback

            (self.work / "soak-error.txt").write_text(traceback.format_exc())
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.report.problems.append(
                f"the soak itself failed at {self.elapsed():.0f} s: {type(exc).__name__}: {first}"
                f" (traceback in {self.work}/soak-error.txt)"
            )
        finally:
            self.report.seconds = time.monotonic() - self.started
            self.read_runner_logs()
            self.close()
        return self.report

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def upload(self, blob: str, data: bytes, path: Path | None, code: str | None = None) -> None:
        try:
            etag = harness.upload(self.blobs, blob, data)
        except Exception as exc:
            if not self.heal_emulator(exc):
                raise
            etag = harness.upload(self.blobs, blob, data)
        version = Version(blob, etag, path, code)
        self.report.versions.append(version)
        self.current[blob] = version

    def content(self, name: str, seed: int) -> Path:
        rows = self.rng.randint(self.c.min_rows, self.c.max_rows)
        return harness.write_bank(self.work / "files" / name, rows, seed=seed, locations=30, dirty=0.02, duplicates=0.01)

    def drop_file(self, i: int) -> None:
        path = self.content(f"f{i:04}.csv", self.c.seed * 100_000 + i)
        self.upload(f"{harness.DATASET}/soak/f{i:04}.csv", path.read_bytes(), path)

    def inject(self, kind: str) -> None:
        detail = ""
        if kind == "runner_kill":
            assert self.runner is not None
            code = self.runner.kill()
            detail = f"pid {self.runner.pid} exit {code}"
            time.sleep(self.rng.uniform(0.1, 1.5))
            self.start_runner()
        elif kind == "postgres_restart":
            assert self.cluster is not None
            down = self.rng.uniform(0.2, 1.5)
            self.cluster.restart("immediate", down_seconds=down)
            detail = f"down {down:.1f} s"
        elif kind == "azurite_restart":
            assert self.azurite is not None
            down = self.rng.uniform(0.2, 1.0)
            self.azurite.restart(down_seconds=down)
            detail = f"down {down:.1f} s"
        elif kind == "duplicate_delivery":
            detail = self.duplicate_delivery()
        elif kind == "reupload":
            good = sorted(b for b, v in self.current.items() if v.path is not None)
            if not good:
                detail = "skipped: no blob yet"
            else:
                blob = self.rng.choice(good)
                n = self.report.faults["reupload"]
                path = self.content(f"re-{n:04}.csv", self.c.seed * 100_000 + 50_000 + n)
                self.upload(blob, path.read_bytes(), path)
                detail = blob
        elif kind == "bad_file":
            n = self.report.faults["bad_file"]
            data, code = BAD_FILES[n % len(BAD_FILES)]
            blob = f"{harness.DATASET}/soak/bad-{n:03}.csv"
            self.upload(blob, data, None, code)
            detail = f"{blob} ({code})"
        self.report.faults[kind] += 1
        self.report.fault_log.append((self.elapsed(), kind, detail))

    def duplicate_delivery(self) -> str:
        from shared.core import documents
        from shared.storage import queues

        manifests = harness.names(self.blobs, "curated", f"{harness.DATASET}/manifests/")
        for name in self.pick.sample(manifests, len(manifests)):
            try:
                doc = json.loads(self.blobs.get_blob_client("curated", name).download_blob().readall())
            except Exception:  # noqa: BLE001 - pruned since it was listed: try another
                continue
            text = queues.encode_message(documents.load_request(doc))
            self.queues.get_queue_client("load-requests").send_message(text)
            return f"{doc['source']['blob']} run {doc['run_id']}"
        return "skipped: nothing published yet"

    def heal_emulator(self, exc: BaseException | None = None) -> bool:
        """Azurite has a bug of its own: after a client disconnects in the middle of a PUT (which
        is what killing the runner does), it may answer 500 to every later PUT until it restarts
        (Azure/Azurite#1346, #2436; made rarer, not fixed, in 3.32). Azure Storage does not do
        that, so when a PUT gets a 500, restart Azurite and count it apart from the faults."""
        from azure.core.exceptions import HttpResponseError

        if exc is not None and not (isinstance(exc, HttpResponseError) and exc.status_code == 500):
            return False
        if exc is None:
            try:
                self.blobs.get_blob_client(PROBE, "probe").upload_blob(b"probe", overwrite=True)
                return False
            except HttpResponseError as probe:
                if probe.status_code != 500:
                    raise
        assert self.azurite is not None
        self.azurite.restart(down_seconds=0.2)
        self.report.emulator["azurite answered 500 to every PUT: restarted"] += 1
        self.report.fault_log.append((self.elapsed(), "emulator", "Azurite answered 500 to a PUT: restarted it"))
        return True

    # --- settling --------------------------------------------------------------------------------

    def drain(self) -> None:
        """Wait until every current version has its outcome and no message is left; replay what
        a fault parked in a poison queue (its cause, the outage, is over by now)."""
        from shared.storage import poison

        deadline = time.monotonic() + self.c.drain_seconds
        while True:
            assert self.runner is not None
            if not self.runner.alive():
                self.report.problems.append(f"runner pid {self.runner.pid} exited by itself ({self.runner.wait()})")
                self.start_runner()
            parked = harness.poison_messages(self.azurite.connection_string)  # type: ignore[union-attr]
            if any(parked.values()):
                for queue, bodies in parked.items():
                    self.report.poison += [f"{queue}: {describe(body)}" for body in bodies]
                    list(poison.replay(self.queues, queue))
            elif self.settled():
                return
            else:
                self.heal_emulator()
            if time.monotonic() > deadline:
                self.report.problems.append(f"not settled {self.c.drain_seconds:.0f} s after the last file")
                return
            time.sleep(1.0)

    def settled(self) -> bool:
        for queue in ("load-requests", "ingest-requests"):
            if self.queues.get_queue_client(queue).get_queue_properties().approximate_message_count:
                return False
        statuses = {(r["source_blob"], r["source_etag"]): r["status"] for r in harness.ledger(self.dsn)}
        return all(statuses.get((v.blob, v.etag)) in ("loaded", "rejected") for v in self.current.values())

    # --- the checks ------------------------------------------------------------------------------

    def check(self) -> None:
        problems = self.report.problems
        if self.runner and self.runner.alive():
            code = self.runner.terminate()
            if code != 0:
                problems.append(f"the last runner ended with {code}")
        latest = [v for v in self.current.values() if v.path is not None]
        expected = harness.expected(v.path for v in latest if v.path is not None)
        self.report.expected = expected
        got = harness.view_rows(self.dsn)
        want = expected.view_rows()
        if got != want:
            problems.append(f"view != oracle: {len(want - got)} expected rows missing, {len(got - want)} rows not expected")

        ledger = {(r["source_blob"], r["source_etag"]): r for r in harness.ledger(self.dsn)}
        current = {(v.blob, v.etag) for v in self.current.values()}
        for v in self.report.versions:
            row = ledger.get((v.blob, v.etag))
            if (v.blob, v.etag) in current:
                want_status = "loaded" if v.path is not None else "rejected"
                if row is None or row["status"] != want_status or (v.code and row["error_code"] != v.code):
                    got_status = None if row is None else (row["status"], row["error_code"])
                    problems.append(f"{v.blob} (current version): {got_status}, expected {want_status} {v.code or ''}")
            elif row is None:
                self.report.never_ingested += 1  # replaced before its event was handled: nothing to do
            elif row["status"] not in ("loaded", "superseded", "rejected"):
                problems.append(f"{v.blob} (an older version): no terminal outcome, {row['status']}")
        for (blob, etag), row in ledger.items():
            if row["status"] not in ("loaded", "superseded", "rejected"):
                problems.append(f"{blob} {etag}: ledger status {row['status']}")
            if (blob, etag) not in {(v.blob, v.etag) for v in self.report.versions}:
                problems.append(f"{blob} {etag}: a ledger row for a version never uploaded")

        loaded_runs = {(v.blob, ledger[(v.blob, v.etag)]["run_id"]) for v in latest if (v.blob, v.etag) in ledger}
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            lineage = set(conn.execute(f"SELECT DISTINCT _source_blob, _run_id FROM {harness.BY_FILE}").fetchall())
        if not lineage <= loaded_runs:
            problems.append(f"the per-file table holds runs that are not the loaded ones: {sorted(lineage - loaded_runs)[:5]}")

        runs, half = harness.run_consistency(self.blobs)
        self.report.curated = Counter(runs.values())
        self.report.curated["half"] = len(half)
        problems += half
        published = Counter(name.split("/")[-2] for name in harness.names(self.blobs, "curated", f"{harness.DATASET}/manifests/"))
        extra = {key: n for key, n in published.items() if n > 1}
        if extra:
            problems.append(f"curated holds more than one published run of {len(extra)} blob(s): {sorted(extra.items())[:5]}")

        if self.report.poison and not any(self.report.faults[k] for k in INFRASTRUCTURE) and not self.report.emulator:
            problems.append("poison messages without any outage to explain them")
        mem = self.report.memory()
        if mem["samples"] >= 20:
            if mem["longest_s"] >= LONG_ENOUGH_S:
                early, late, what = mem["longest_first_quarter_max_mb"], mem["longest_last_quarter_max_mb"], "quarter"
            else:
                early, late, what = mem["first_half_max_mb"], mem["second_half_max_mb"], "half"
            if late > self.c.flat_ratio * early:
                problems.append(
                    f"memory is not flat: last-{what} peak {late:.0f} MB > {self.c.flat_ratio} x first-{what} peak {early:.0f} MB"
                )

    def read_runner_logs(self) -> None:
        for runner in self.runners:
            for line in runner.output().splitlines():
                text = line.strip()
                if " done in " in text:
                    self.report.runner["done"] += 1
                    if "#" in text and not text.split("#", 1)[1].startswith("1 "):
                        self.report.runner["redelivered"] += 1
                elif " failed after " in text:
                    self.report.runner["failed"] += 1
                    cause = text.split(" failed after ", 1)[1].split(": ", 2)
                    self.report.causes[cause[1] if len(cause) > 1 else "?"] += 1
                elif "storage unreachable" in text:
                    self.report.runner["outages"] += 1
                elif "bookkeeping failed" in text:
                    self.report.runner["bookkeeping"] += 1


def describe(body: str) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:80]
    if "source" in doc:
        return f"load {doc['source']['blob']}"
    return f"ingest {doc.get('BlobName') or doc.get('blob')}"


def run(config: Config, work: Path | None = None, out: Any = print) -> Report:
    work = work or Path(tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    return Soak(config, work, out).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__.split("\n\n")[0])
    defaults = Config()
    p.add_argument("--files", type=int, default=defaults.files)
    p.add_argument("--minutes", type=float, default=defaults.minutes)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--workers", type=int, default=defaults.workers)
    p.add_argument("--faults-per-minute", type=float, default=defaults.faults_per_minute)
    p.add_argument("--flat-ratio", type=float, default=defaults.flat_ratio)
    p.add_argument("--azurite-debug", action="store_true", help="keep Azurite's debug log (every request) in the work folder")
    p.add_argument("--work", type=Path, help="folder for logs and data (default: a new temporary folder, kept)")
    args = p.parse_args(argv)
    config = Config(
        files=args.files,
        minutes=args.minutes,
        seed=args.seed,
        workers=args.workers,
        faults_per_minute=args.faults_per_minute,
        flat_ratio=args.flat_ratio,
        azurite_debug=args.azurite_debug,
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"soak: seed {config.seed}, {config.files} files over {config.minutes:g} min; logs in {work}", flush=True)
    report = run(config, work)
    for at, kind, detail in report.fault_log:
        print(f"  {at:6.1f} s  {kind:<18} {detail}")
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
