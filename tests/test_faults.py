"""Fault tests with real services: PostgreSQL and Azurite stopped, the runner killed, events
delivered again and again. Each test makes its fault happen, checks that it was observed, and
ends with the PostgreSQL view equal to an independent recomputation (``tests/oracle.py``).

PostgreSQL here is a private cluster (``tests/faults/cluster.py``) that the tests may crash
and restart; tests that restart Azurite get a private Azurite of their own.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared.app import triggers
from tests.faults import harness
from tests.faults.cluster import BreakableAzurite, PgCluster, pg_cluster, private_azurite

DATASET = harness.DATASET


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with pg_cluster() as c:
        yield c


@pytest.fixture
def db(cluster: PgCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """A fresh database in the private cluster, set as POSTGRES_DSN."""
    if not cluster.running:
        cluster.start()
    name = f"fault_{uuid.uuid4().hex[:10]}"
    dsn = cluster.create_database(name)
    monkeypatch.setenv("POSTGRES_DSN", dsn)
    triggers.reset()
    try:
        yield SimpleNamespace(name=name, dsn=dsn, cluster=cluster)
    finally:
        triggers.reset()
        if not cluster.running:
            cluster.start()
        cluster.drop_database(name)


@pytest.fixture
def own_azurite(monkeypatch: pytest.MonkeyPatch) -> Iterator[BreakableAzurite]:
    """An Azurite of the test's own, which it may restart, set as the app's storage."""
    with private_azurite() as emulator:
        for setting in ("DataStorage", "AzureWebJobsStorage"):
            monkeypatch.setenv(setting, emulator.connection_string)
        triggers.reset()
        try:
            yield emulator
        finally:
            triggers.reset()


@pytest.fixture
def impatient_storage() -> Iterator[None]:
    """Storage clients without the SDK's long retries (see ``harness.impatient_storage``)."""
    undo = harness.impatient_storage(retries=0)
    triggers.reset()
    try:
        yield
    finally:
        undo()
        triggers.reset()


class LoadOutcomes(logging.Handler):
    """Collects the loader's outcome of every load (its ``load <blob>: <status>`` records)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.statuses: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        status = getattr(record, "status", None)
        if status:
            self.statuses.append(str(status))


@pytest.fixture
def load_outcomes() -> Iterator[LoadOutcomes]:
    logger = logging.getLogger("pipeline.load")
    handler, level = LoadOutcomes(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def local_host(events: list[str], *, workers: int = 2):
    """The in-process runner, with a one-second retry delay (as the end-to-end tests use) and
    its events collected; host.json's maxDequeueCount (5) stays."""
    import function_app
    from shared.tools.runner import LocalHost

    overrides = {"visibilityTimeout": "00:00:01"}
    host = LocalHost(function_app.app, workers=workers, poll_seconds=0.05, queue_overrides=overrides, on_event=events.append)
    host.lease = 3  # a message whose runner lost track of it (storage gone at the wrong moment) is back in 3 s
    return host


def invocations(events: list[str], function: str, outcome: str) -> list[str]:
    """The runner's lines for ``function``'s invocations that ended ``done`` or ``failed``."""
    marker = {"done": " done in ", "failed": " failed after "}[outcome]
    return [e for e in events if e.strip().startswith(f"{function}:") and marker in e]


class Injector(threading.Thread):
    """Runs a fault in the background while the runner works in the test's thread; any error
    it meets is raised again by ``result()``."""

    def __init__(self, fault: Callable[[], object]) -> None:
        super().__init__(daemon=True, name="fault-injector")
        self.fault = fault
        self.value: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fault()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc

    def result(self, timeout: float = 60) -> object:
        self.join(timeout)
        assert not self.is_alive(), "the fault injector did not finish"
        if self.error:
            raise self.error
        return self.value


def ingest_now(connection_string: str, blob: str) -> str:
    """Fire ``ingest`` for whatever version of ``blob`` is in raw now; return its load request."""
    from azure.storage.blob import BlobClient

    return triggers.ingest_blob(BlobClient.from_connection_string(connection_string, "raw", blob))


def json_source(request: str) -> dict:
    import json

    return json.loads(request)["source"]


@pytest.mark.slow
def test_postgres_stopped_during_a_load_the_message_is_retried_and_loaded_once(storage_clean, db, tmp_path: Path):
    service = harness.blob_service(storage_clean.connection_string)
    blob = f"{DATASET}/during-outage.csv"
    path = harness.write_bank(tmp_path / "outage.csv", 150_000, seed=12)
    etag = harness.upload(service, blob, path.read_bytes())

    running = threading.Event()
    running.set()

    def crash_postgres_mid_copy() -> harness.Copy:
        copy = harness.wait_for_copy(db.cluster.dsn(), db.name, timeout=120, alive=running.is_set)
        db.cluster.stop("immediate")  # a crash: every backend killed, the COPY's transaction lost
        db.cluster.start()  # crash recovery, then accepting connections again
        return copy

    injector = Injector(crash_postgres_mid_copy)
    injector.start()
    events: list[str] = []
    try:
        stats = local_host(events).run(until_idle=True, timeout=180)
    finally:
        running.clear()
    copy = injector.result()
    print(*events, sep="\n")

    assert isinstance(copy, harness.Copy) and db.cluster.stops == ["immediate"]
    failed = invocations(events, "load", "failed")
    done = invocations(events, "load", "done")
    assert failed and stats.failures == len(failed) and stats.poisoned == 0, events
    assert len(done) == 1 and "#1 " not in done[0], events  # a later delivery of the same message
    assert harness.view_rows(db.dsn) == harness.expected([path]).view_rows()
    [row] = harness.ledger(db.dsn)
    assert (row["source_blob"], row["source_etag"], row["status"]) == (blob, etag, "loaded")


@pytest.mark.slow
def test_a_loader_killed_mid_copy_leaves_no_partial_rows_and_the_retry_loads_once(storage_clean, db, tmp_path: Path):
    azurite = storage_clean
    service = harness.blob_service(azurite.connection_string)
    blob = f"{DATASET}/big-keys.csv"
    path = harness.write_bank(tmp_path / "big.csv", 200_000, seed=11)  # every row its own key: a long COPY
    etag = harness.upload(service, blob, path.read_bytes())
    env = harness.runner_env(azurite.connection_string, db.dsn, PIPELINE_RUNNER_LEASE_SECONDS="3")

    first = harness.RunnerProcess.cli(env, tmp_path / "first.log", workers=2)
    with harness.running(first):
        copy = harness.wait_for_copy(db.dsn, db.name, timeout=120, alive=first.alive)
        code = first.kill()
    assert code == -9, first.output()
    assert harness.backend_gone(db.dsn, copy.pid), "the killed loader's backend should end with its client"
    # the transaction died with its client: nothing of it is visible, and no ledger row says loaded
    assert harness.rows_of_source(db.dsn, blob) == 0
    assert not [r for r in harness.ledger(db.dsn) if r["status"] == "loaded"]

    second = harness.RunnerProcess.cli(env, tmp_path / "second.log", workers=2)
    with harness.running(second):
        assert second.wait(180) == 0, second.output()

    assert "load-requests #2 done" in second.output(), second.output()  # the same message, delivered again
    assert harness.view_rows(db.dsn) == harness.expected([path]).view_rows()
    [row] = harness.ledger(db.dsn)
    assert (row["source_blob"], row["source_etag"], row["status"]) == (blob, etag, "loaded")


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["after_the_first_output", "before_the_manifest"])
def test_azurite_restarted_during_ingest_leaves_outputs_complete_or_absent_and_the_retry_finishes(
    own_azurite, impatient_storage, db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
):
    from shared.storage import blobs

    service = harness.blob_service(own_azurite.connection_string)
    blob = f"{DATASET}/restart.csv"
    path = harness.write_bank(tmp_path / "restart.csv", 40_000, seed=13, locations=50, dirty=0.01)  # rejects too
    etag = harness.upload(service, blob, path.read_bytes())

    writes: list[str] = []
    restarts: list[Injector] = []

    def restart_azurite_at_the_moment(name: str) -> None:
        """Called before each output write of an ingest: at the chosen moment, Azurite goes down
        (the write about to happen fails) and comes back a second later."""
        writes.append(name)
        due = len(writes) == 2 if moment == "after_the_first_output" else "/manifests/" in name
        if due and not restarts:
            own_azurite.stop()
            restarts.append(Injector(lambda: (time.sleep(1.0), own_azurite.start())))
            restarts[0].start()

    upload_file, upload_bytes = blobs.BlobStore.upload_file, blobs.BlobStore.upload_bytes

    def watched_upload_file(self, container, name, *args, **kwargs):
        restart_azurite_at_the_moment(name)
        return upload_file(self, container, name, *args, **kwargs)

    def watched_upload_bytes(self, container, name, *args, **kwargs):
        restart_azurite_at_the_moment(name)
        return upload_bytes(self, container, name, *args, **kwargs)

    monkeypatch.setattr(blobs.BlobStore, "upload_file", watched_upload_file)
    monkeypatch.setattr(blobs.BlobStore, "upload_bytes", watched_upload_bytes)

    events: list[str] = []
    stats = local_host(events).run(until_idle=True, timeout=180)
    print(*events, sep="\n")

    assert len(restarts) == 1 and own_azurite.proc is not None
    restarts[0].result()
    failed = invocations(events, "ingest", "failed")
    assert failed and stats.poisoned == 0, events  # the fault reached the ingest, and its retry did the work

    runs, problems = harness.run_consistency(service)
    assert problems == []
    assert list(runs.values()) == ["published"], runs  # the failed run left nothing behind
    assert harness.view_rows(db.dsn) == harness.expected([path]).view_rows()
    [row] = harness.ledger(db.dsn)
    assert (row["source_blob"], row["source_etag"], row["status"]) == (blob, etag, "loaded")


@pytest.mark.slow
def test_azurite_restarted_while_old_outputs_are_pruned_never_leaves_them_half_deleted(
    own_azurite, impatient_storage, db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from shared.storage import blobs

    service = harness.blob_service(own_azurite.connection_string)
    blob = f"{DATASET}/pruned.csv"
    old = harness.write_bank(tmp_path / "old.csv", 3_000, seed=15, locations=20, dirty=0.02)
    new = harness.write_bank(tmp_path / "new.csv", 3_000, seed=16, locations=20, dirty=0.02)
    harness.upload(service, blob, old.read_bytes())
    events: list[str] = []
    local_host(events).run(until_idle=True, timeout=120)
    [first_run] = harness.run_consistency(service)[0]
    etag = harness.upload(service, blob, new.read_bytes())  # a new version: its load prunes the old run

    deletes: list[str] = []
    restarts: list[Injector] = []
    seen: list[tuple[dict[str, str], list[str]]] = []
    delete = blobs.BlobStore.delete

    def delete_until_azurite_goes_away(self, container, name):
        deletes.append(name)
        if len(deletes) == 2 and not restarts:  # the first old output is gone, then storage is
            seen.append(harness.run_consistency(service))  # what a reader would find now
            own_azurite.stop()
            restarts.append(Injector(lambda: (time.sleep(1.0), own_azurite.start())))
            restarts[0].start()
        return delete(self, container, name)

    monkeypatch.setattr(blobs.BlobStore, "delete", delete_until_azurite_goes_away)
    events.clear()
    stats = local_host(events).run(until_idle=True, timeout=120)
    restarts[0].result()

    assert first_run in deletes[0] and "/manifests/" in deletes[0], deletes  # unpublished first
    [(runs_at_the_cut, half_at_the_cut)] = seen
    assert half_at_the_cut == [] and runs_at_the_cut[first_run] == "unpublished"
    assert len(invocations(events, "load", "failed")) == 1, events  # cut short: the message came back
    runs, problems = harness.run_consistency(service)
    assert problems == [] and first_run not in runs and list(runs.values()) == ["published"], runs  # and finished it
    assert stats.poisoned == 0
    assert harness.view_rows(db.dsn) == harness.expected([new]).view_rows()
    assert {r["source_etag"]: r["status"] for r in harness.ledger(db.dsn)}[etag] == "loaded"


@pytest.mark.slow
def test_the_same_blob_event_delivered_five_times_concurrently_is_loaded_once(storage_clean, db, load_outcomes, tmp_path: Path):
    service = harness.blob_service(storage_clean.connection_string)
    blob = f"{DATASET}/five-times.csv"
    path = harness.write_bank(tmp_path / "five.csv", 30_000, seed=14, locations=60, dirty=0.01)
    etag = harness.upload(service, blob, path.read_bytes())
    events: list[str] = []
    host = local_host(events, workers=5)
    host.batch = 5  # the five load requests are taken at once, by five workers
    host.prepare()
    [spec] = [s for s in host.specs if s.name == "ingest"]

    # five deliveries of the same BlobCreated event, through the runner's own invocation path
    start = threading.Barrier(5)

    def deliver() -> None:
        start.wait()
        host.deliver_blob(spec, blob, etag)

    deliveries = [Injector(deliver) for _ in range(5)]
    for d in deliveries:
        d.start()
    for d in deliveries:
        d.result()
    ingests = invocations(events, "ingest", "done")
    assert len(ingests) == 5, events
    load_queue = harness.queue_service(storage_clean.connection_string).get_queue_client("load-requests")
    assert load_queue.get_queue_properties().approximate_message_count == 5

    stats = host.run(until_idle=True, timeout=180)
    print(*events, sep="\n")

    assert sorted(load_outcomes.statuses) == ["duplicate"] * 4 + ["loaded"], (load_outcomes.statuses, events)
    assert harness.view_rows(db.dsn) == harness.expected([path]).view_rows()
    [row] = harness.ledger(db.dsn)
    assert (row["source_blob"], row["source_etag"], row["status"], row["attempts"]) == (blob, etag, "loaded", 1)
    runs, problems = harness.run_consistency(service)
    assert problems == []
    assert list(runs) == [row["run_id"]], runs  # curated keeps the loaded run only: every valid row once
    assert stats.poisoned == 0


@pytest.mark.slow
def test_fifty_files_dropped_at_once_are_all_loaded_by_parallel_workers_with_exact_sums(
    storage_clean, db, load_outcomes, tmp_path: Path
):
    service = harness.blob_service(storage_clean.connection_string)
    paths = {}
    for i in range(50):  # twenty towns, a year of days, five domains: the files share many keys
        path = harness.write_bank(tmp_path / f"f{i:02}.csv", 400, seed=100 + i, locations=20, dirty=0.02)
        paths[f"{DATASET}/batch/f{i:02}.csv"] = path
        harness.upload(service, f"{DATASET}/batch/f{i:02}.csv", path.read_bytes())
    want = harness.expected(paths.values())
    shared_keys = sum(1 for v in want.daily.values() if v[2] > 1)
    assert shared_keys > 100, "the files should overlap so that adding up is tested"

    events: list[str] = []
    stats = local_host(events, workers=4).run(until_idle=True, timeout=240)

    assert stats.by_function == {"ingest": 50, "load": 50} and stats.failures == 0, events
    assert sorted(load_outcomes.statuses) == ["loaded"] * 50
    assert harness.view_rows(db.dsn) == want.view_rows()
    rows = harness.ledger(db.dsn)
    assert sorted((r["source_blob"], r["status"]) for r in rows) == sorted((b, "loaded") for b in paths)
    assert sum(r["rows_valid"] for r in rows) == want.valid and sum(r["rows_rejected"] for r in rows) == want.rejected


@pytest.mark.slow
def test_a_load_poisoned_by_a_postgres_outage_is_replayed_after_the_restart_and_loads_once(
    storage_clean, db, load_outcomes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from shared.storage.queues import QueueSender
    from shared.tools import cli

    service = harness.blob_service(storage_clean.connection_string)
    blob = f"{DATASET}/poisoned.csv"
    path = harness.write_bank(tmp_path / "poisoned.csv", 2_000, seed=17, locations=30, dirty=0.01)
    etag = harness.upload(service, blob, path.read_bytes())
    db.cluster.stop("immediate")  # PostgreSQL is down for longer than every delivery of the load
    events: list[str] = []
    try:
        stats = local_host(events).run(until_idle=True, timeout=120)
    finally:
        db.cluster.start()

    failed = invocations(events, "load", "failed")
    assert len(failed) == 5 and stats.poisoned == 1, events  # maxDequeueCount deliveries, then parked
    [parked] = harness.poison_messages(storage_clean.connection_string)["load-requests-poison"]
    assert json_source(parked)["blob"] == blob and json_source(parked)["etag"] == etag
    assert harness.ledger(db.dsn) == [] and not load_outcomes.statuses  # nothing reached the database

    assert cli.main(["replay", "--poison", "load"]) == 0  # the cause is fixed: replay
    assert "1 message(s) moved back" in capsys.readouterr().out
    local_host(events).run(until_idle=True, timeout=120)
    QueueSender().send("load-requests", parked)  # and the same request once more, as a second replay would
    local_host(events).run(until_idle=True, timeout=120)

    assert load_outcomes.statuses == ["loaded", "duplicate"]
    assert harness.poison_messages(storage_clean.connection_string)["load-requests-poison"] == []
    assert harness.view_rows(db.dsn) == harness.expected([path]).view_rows()
    [row] = harness.ledger(db.dsn)
    assert (row["source_blob"], row["source_etag"], row["status"], row["attempts"]) == (blob, etag, "loaded", 1)


@pytest.mark.slow
def test_an_old_version_whose_load_arrives_last_is_superseded_even_within_the_same_second(storage_clean, db, tmp_path: Path):
    service = harness.blob_service(storage_clean.connection_string)
    for attempt in range(10):  # Last-Modified has one-second resolution: land both versions in one second
        blob = f"{DATASET}/versions-{attempt}.csv"
        old = harness.write_bank(tmp_path / f"old-{attempt}.csv", 500, seed=20 + attempt, locations=10)
        new = harness.write_bank(tmp_path / f"new-{attempt}.csv", 500, seed=40 + attempt, locations=10)
        while time.time() % 1 > 0.3:
            time.sleep(0.01)
        old_etag = harness.upload(service, blob, old.read_bytes())
        late_request = ingest_now(storage_clean.connection_string, blob)  # its load message is delayed
        new_etag = harness.upload(service, blob, new.read_bytes())
        stamps = {json_source(late_request)["last_modified"]}
        stamps.add(service.get_blob_client("raw", blob).get_blob_properties().last_modified.isoformat())
        if len(stamps) == 1:
            break
    else:
        pytest.fail("could not upload two versions within one second")

    events: list[str] = []
    local_host(events).run(until_idle=True, timeout=120)  # the new version: ingested and loaded
    triggers.load_requested(late_request)  # then the old version's load request arrives

    assert harness.view_rows(db.dsn) == harness.expected([new]).view_rows()
    statuses = {r["source_etag"]: r["status"] for r in harness.ledger(db.dsn) if r["source_blob"] == blob}
    assert statuses == {new_etag: "loaded", old_etag: "superseded"}


@pytest.mark.slow
def test_a_short_soak_with_faults_at_random_points_loses_nothing_doubles_nothing_and_stays_flat(tmp_path: Path):
    """The CI version of ``tests/faults/soak.py`` (``scripts/soak`` runs the long one): forty
    files in 45 s, nine faults of every kind at seeded random moments, its own PostgreSQL,
    Azurite and runner process."""
    from tests.faults import soak

    config = soak.Config(files=40, minutes=0.75, seed=7, faults_per_minute=12, drain_seconds=120)
    report = soak.run(config, tmp_path / "soak")
    print(report.render())

    assert report.ok, report.render()
    assert all(report.faults[kind] >= 1 for kind in soak.KINDS), report.faults
    # the faults reached the pipeline: failed invocations or storage outages the runner waited out
    assert report.runner["failed"] + report.runner["outages"] >= 1 and report.runners_started >= 2, report.render()
    assert report.expected is not None and report.expected.valid > 0 and report.expected.duplicate > 0
