"""What the ``load`` trigger runs: a run's aggregates into PostgreSQL, in one transaction, then tidy.

    download the run's Parquet outputs      (storage)
    COPY (binary) ─▶ temp staging tables        (private to this transaction; ``postgres.replace``)
    pg_advisory_xact_lock(dataset, source blob) (serialises loads of the same source)
    ledger: already loaded? a newer version loaded? ─▶ skip, recorded
    DELETE the source's rows; INSERT from staging (per-file replace)
    ledger row ─▶ loaded
    COMMIT
    lake: under the source's lock, every Delta table's partition of the source ─▶ the run the
          ledger says is loaded, one commit per table (``shared.app.lake``)

Because the replace and the ledger row commit together, a message delivered twice, a load
killed half way or two versions racing can never leave a file counted twice or half. The
lock is transaction-scoped, which stays correct behind PgBouncer in transaction mode (as
Azure's built-in PgBouncer runs), where a session lock would leak to other clients.

The lake follows PostgreSQL rather than ingest, so that a load that fails leaves both on the
source's previous version, and a reader of a table never sees a version PostgreSQL does not
hold (docs/lake.md). The SQL lives in ``shared.postgres``; this module decides (skip,
supersede, replace, record) and talks to storage for the outputs it loads and the older runs it
prunes afterwards.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
from psycopg import Connection

from shared.app import lake, telemetry
from shared.app import scratch as scratch_folders
from shared.app.retries import is_transient
from shared.core import layout, report
from shared.core.contract import Contract
from shared.core.documents import LoadOutcome, Manifest, SourceVersion
from shared.core.errors import PipelineError
from shared.postgres import ledger, locks, replace, warehouse
from shared.postgres.errors import is_permanent_database_error
from shared.storage import lake as store_lake
from shared.storage.blobs import Store

log = logging.getLogger("pipeline.load")


@dataclass
class Outcome:
    status: LoadOutcome
    source_blob: str
    run_id: str
    rows: dict[str, int] = field(default_factory=dict)
    detail: str = ""
    seconds: float = 0.0
    lake: dict[str, int | None] = field(default_factory=dict)  # output -> the commit that published it
    lake_cost: dict[str, int] = field(default_factory=dict)  # commits, races, retries, conflicts


class Loader:
    """Loads manifests with one cached connection; DDL is applied once per contract version."""

    def __init__(
        self,
        conn_factory: Any,
        store: Store,
        contracts: Mapping[str, Contract],
        ledger_schema: str = "pipeline",
        reader_role: str | None = None,
    ) -> None:
        self.conn_factory = conn_factory
        self.store = store
        self.contracts = contracts
        self.schema = ledger_schema
        self.reader_role = reader_role
        self._ready: set[tuple[str, int]] = set()
        self._ledger_ready = False
        self._options: dict[str, str] | None = None

    def prepare(self, conn: Connection, contract: Contract | None) -> None:
        if not self._ledger_ready:
            ledger.ensure(conn, self.schema)
            self._ledger_ready = True
        if contract is not None and (contract.dataset, contract.version) not in self._ready:
            warehouse.ensure(conn, contract, self.schema, self.reader_role)
            self._ready.add((contract.dataset, contract.version))

    def load(self, request: Manifest) -> Outcome:
        """Apply one load request (a manifest). Raises only for transient failures."""
        conn = self.conn_factory()
        started = time.perf_counter()
        contract = self.contracts.get(request["dataset"])
        try:
            self.prepare(conn, contract)
            attrs = {"dataset": request["dataset"], "source_blob": request["source"]["blob"], "run_id": request["run_id"]}
            with telemetry.stage("load", None, **attrs):
                outcome = self._load(conn, request, contract)
        except Exception as exc:
            if is_transient(exc):
                _try_record_failure(conn, self.schema, request, exc)
                raise
            if not is_permanent_database_error(exc) and not isinstance(exc, PipelineError):
                raise
            code = getattr(exc, "code", None) if isinstance(exc, PipelineError) else "rejected_by_database"
            detail = f"{type(exc).__name__}: {exc}"
            with conn.transaction():
                ledger.record(conn, self.schema, request, ledger.REJECTED, error_code=code, error_detail=detail[:4000])
            outcome = Outcome("rejected", request["source"]["blob"], request["run_id"], detail=detail)
        if outcome.status in ("loaded", "duplicate") and contract is not None and request["outputs"].get("lake"):
            outcome.lake, outcome.lake_cost = self._publish(conn, request, contract)
        outcome.seconds = time.perf_counter() - started
        telemetry.count_file(request["dataset"], "load", outcome.status)
        log.info(
            "load %s: %s", request["source"]["blob"], outcome.status,
            extra={"run_id": request["run_id"], "dataset": request["dataset"], "source_blob": request["source"]["blob"],
                   "status": outcome.status, "seconds": round(outcome.seconds, 3)},
        )  # fmt: skip
        self._tidy(conn, request, outcome)
        return outcome

    def _publish(self, conn: Connection, request: Manifest, contract: Contract) -> tuple[dict[str, int | None], dict[str, int]]:
        """Once PostgreSQL has committed, make the lake hold what it holds (``shared.app.lake``),
        and name the commits in the run's manifest and report. Any failure raises: the message
        comes back, the ledger says ``duplicate``, and this runs again; a commit already made is
        recognised by its ``txn`` and not made twice."""
        with telemetry.stage("lake", None, dataset=contract.dataset, run_id=request["run_id"]):
            versions, counts = lake.sync_source(
                conn, self.schema, self.store, contract, request["source"]["blob"], by="loader", options=self._lake_options()
            )
        if counts.commits:
            log.info(
                "lake: %s published in %d commit(s) %s", request["source"]["blob"], counts.commits, versions,
                extra={"run_id": request["run_id"], "dataset": contract.dataset, "lake": counts.as_dict()},
            )  # fmt: skip
        mine = {o: v for o, v in versions.items() if v is not None and o in request["outputs"]["lake"]["tables"]}
        if mine and counts.commits and counts.run_id == request["run_id"]:
            self._name_commits(request, mine)
        return versions, counts.as_dict()

    def _lake_options(self) -> dict[str, str]:
        if self._options is None:
            self._options = store_lake.storage_options()
        return self._options

    def _name_commits(self, request: Manifest, versions: dict[str, int | None]) -> None:
        """Write the commit versions into the run's manifest and report (published before them)."""
        ref = request["outputs"].get("manifest")
        if not ref:
            return
        try:
            doc = json.loads(self.store.read_bytes(ref["container"], ref["name"]))
        except Exception as exc:  # noqa: BLE001 - pruned meanwhile by a newer run: nothing to name
            log.info("manifest of %s not rewritten: %s", request["run_id"], exc)
            return
        if doc.get("run_id") != request["run_id"]:
            return
        for output, version in versions.items():
            doc["outputs"]["lake"]["tables"][output]["version"] = version
        report_ref = doc["outputs"].get("report")
        if report_ref:
            page = report.html_report(doc).encode()
            self.store.upload_bytes(report_ref["container"], report_ref["name"], page, "text/html; charset=utf-8")
        body = json.dumps(doc, indent=2, default=str).encode()
        self.store.upload_bytes(ref["container"], ref["name"], body, "application/json")

    def _tidy(self, conn: Connection, request: Manifest, outcome: Outcome) -> None:
        """Once the outcome is committed, delete the outputs in storage that nothing will read:
        after a load, those of the source's older runs; after a skip, those of the skipped run,
        which left in place would put the same rows in ``curated`` more than once (the same
        event delivered twice makes two runs of one version). The outputs of the run that is
        loaded are never deleted; when its own request comes again, its pruning is done again,
        in case the first delivery was cut short.

        A transient failure here (storage unreachable) is raised, so that the message comes
        back and the tidying is finished by its next delivery, which finds the load done."""
        if outcome.status not in ("loaded", "duplicate", "superseded"):
            return
        run_id = request["run_id"]
        try:
            if outcome.status == "loaded":
                mine = True
            else:
                src = request["source"]
                row = ledger.get(conn, self.schema, src["blob"], src["etag"])
                mine = bool(row and row["status"] == ledger.LOADED and row["run_id"] == run_id)
            if mine:
                self._delete_runs(request, lambda run: run < run_id)
            else:
                self._delete_runs(request, lambda run: run == run_id)
                self._delete_staged(request)
        except Exception as exc:
            if is_transient(exc):
                log.warning("tidying the outputs of %s failed; the message will come back: %s", request["source"]["blob"], exc)
                raise
            log.warning("tidying the outputs of %s failed: %s", request["source"]["blob"], exc)

    def _load(self, conn: Connection, request: Manifest, contract: Contract | None) -> Outcome:
        blob = request["source"]["blob"]
        run_id = request["run_id"]
        if request["status"] != "succeeded" or contract is None:
            with conn.transaction():
                locks.lock_source(conn, request["dataset"], blob)
                overtaken = self._overtaken(conn, request)
                if not overtaken:
                    ledger.record(conn, self.schema, request, ledger.REJECTED)
            if overtaken:
                return Outcome("stale", blob, run_id, detail=overtaken)
            return Outcome("rejected", blob, run_id, detail=(request.get("error") or {}).get("code", "unknown_dataset"))
        if request.get("contract_version") != contract.version:
            detail = f"produced under contract v{request.get('contract_version')}, current is v{contract.version}: re-ingest"
            with conn.transaction():
                locks.lock_source(conn, contract.dataset, blob)
                overtaken = self._overtaken(conn, request)
                if not overtaken:
                    ledger.record(conn, self.schema, request, ledger.FAILED, error_code="stale_contract", error_detail=detail)
            return Outcome("stale", blob, run_id, detail=overtaken or detail)
        # Under the source's lock, so that a skip is decided on committed outcomes only, and an
        # older version is recorded as superseded whether it is found out early or late.
        with conn.transaction():
            locks.lock_source(conn, contract.dataset, blob)
            early = self._skip_reason(conn, request, contract)
            if early == "superseded":
                ledger.record(conn, self.schema, request, ledger.SUPERSEDED)
        if early:
            return Outcome(early, blob, run_id)

        gone = self._check_staged(request)
        if gone:
            detail = f"{gone}: re-ingest (the nightly job re-drives failed runs)"
            ledger.record_failure(conn, self.schema, request, "lake_files_missing", detail)
            return Outcome("failed", blob, run_id, detail=detail)
        scratch = scratch_folders.new_folder("load-")
        rows: dict[str, int] = {}
        try:
            frames = self._fetch(request, contract, scratch)
            with conn.transaction():
                shapes = [(name, shape) for name, shape in warehouse.tables(contract) if name in frames]
                staged = {name: replace.stage(conn, shape, frames[name]) for name, shape in shapes}
                locks.lock_source(conn, contract.dataset, blob)
                late = self._skip_reason(conn, request, contract)
                if late == "superseded":
                    ledger.record(conn, self.schema, request, ledger.SUPERSEDED)
                if not late:
                    for name, shape in warehouse.tables(contract):
                        rows[name] = replace.replace_rows(conn, shape, staged.get(name), blob, run_id)
                    ledger.record(conn, self.schema, request, ledger.LOADED)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if late:
            return Outcome(late, blob, run_id)
        return Outcome("loaded", blob, run_id, rows=rows)

    def _overtaken(self, conn: Connection, request: Manifest) -> str | None:
        """Why a late request (refused, or of an older contract) must change nothing: this
        version was loaded since by another run, or a newer version of the blob is loaded. A
        re-delivered message must never rewrite a good ledger row (under the source's lock)."""
        src = request["source"]
        row = ledger.get(conn, self.schema, src["blob"], src["etag"])
        if row and row["status"] == ledger.LOADED and row["run_id"] != request["run_id"]:
            return f"this version was loaded since by run {row['run_id']} (contract v{row['contract_version']}): nothing to do"
        newer = self._newer_loaded(conn, src)
        if newer:
            return f"a newer version of the blob is loaded (run {newer['run_id']}): nothing to do"
        return None

    def _newer_loaded(self, conn: Connection, src: SourceVersion) -> dict[str, Any] | None:
        """The loaded version of the source, if it is newer than ``src``."""
        cur = ledger.current(conn, self.schema, src["blob"])
        if not cur or cur["etag"] == src["etag"] or cur["last_modified"] is None:
            return None
        from datetime import datetime

        mine = datetime.fromisoformat(src["last_modified"])
        if cur["last_modified"] > mine:
            return cur
        if cur["last_modified"] == mine and not self._is_current_in_raw(src):
            # Last-Modified has one-second resolution: two versions written within the same
            # second tie. The version in raw now is the newer one; any other is superseded.
            return cur
        return None

    def _skip_reason(self, conn: Connection, request: Manifest, contract: Contract) -> Literal["duplicate", "superseded"] | None:
        """'duplicate' if this version is already loaded under this contract version,
        'superseded' if a newer version of the blob is loaded."""
        src = request["source"]
        row = ledger.get(conn, self.schema, src["blob"], src["etag"])
        already = row and row["status"] == ledger.LOADED and row["contract_version"] == contract.version
        if already and (not request.get("force") or row["run_id"] == request["run_id"]):  # type: ignore[index]
            return "duplicate"
        return "superseded" if self._newer_loaded(conn, src) else None

    def _is_current_in_raw(self, src: SourceVersion) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.store.info(src.get("container") or layout.RAW, src["blob"]).etag == src["etag"]
        except (ResourceNotFoundError, FileNotFoundError):
            return False  # deleted since: keep what is loaded

    def _fetch(self, request: Manifest, contract: Contract, scratch: Path) -> dict[str, pl.DataFrame]:
        frames: dict[str, pl.DataFrame] = {}
        outputs = request["outputs"]
        refs = {f"aggregate:{k}": v for k, v in outputs.get("aggregates", {}).items()}
        refs |= {f"distinct:{k}": v for k, v in outputs.get("distinct_values", {}).items()}
        for name, ref in refs.items():
            path = scratch / f"{name.replace(':', '-')}.parquet"
            self.store.download_to(ref["container"], ref["name"], path)
            frames[name] = pl.read_parquet(path)
        missing = [name for name, _ in warehouse.tables(contract) if name not in frames]
        if missing:
            raise PipelineError("missing_output", f"the manifest names no output for {', '.join(missing)}")
        return frames

    def _delete_runs(self, request: Manifest, chosen: Callable[[str], bool]) -> None:
        """Delete the outputs of this source's runs that ``chosen(run_id)`` picks: their manifests
        first, so that a run is never seen published with an output missing, even if deleting
        stops half way; then their other outputs in curated, then their rejects in quarantine
        (the quarantined copies and error reports of refused files stay)."""
        paths = layout.RunPaths(request["dataset"], request["source_key"], request["run_id"])
        prefixes = sorted(paths.prefixes(), key=lambda p: "/manifests/" not in p[1])
        for container, prefix in prefixes:
            for info in self.store.list(container, prefix):
                parts = info.name.split("/")
                if paths.source_key in parts and chosen(parts[-1].split(".", 1)[0]):
                    self.store.delete(container, info.name)
        container, rejects = paths.rejects  # <dataset>/<source key>/<run>/rejects.parquet
        leaf = rejects.rsplit("/", 1)[1]
        for info in self.store.list(container, rejects.rsplit("/", 2)[0] + "/"):
            parts = info.name.split("/")
            if parts[-1] == leaf and chosen(parts[-2]):
                self.store.delete(container, info.name)

    def _delete_staged(self, request: Manifest) -> None:
        """The lake files of a skipped run: never committed (the lake commits only the run the
        ledger says is loaded), so nothing reads them; without this the vacuum would, later.
        Files of older runs that were committed are the vacuum's, never deleted here: a reader
        travelling back in time may still read them."""
        tables = request["outputs"].get("lake", {}).get("tables", {})
        prefix = f"{request['run_id']}."
        for table in tables.values():
            folder = f"{table['path']}/_source_key={request['source_key']}/"
            for info in self.store.list(layout.CURATED, folder):
                if info.name.rsplit("/", 1)[-1].startswith(prefix):
                    self.store.delete(layout.CURATED, info.name)

    def _check_staged(self, request: Manifest) -> str | None:
        """Why the run's lake files cannot be committed, if they cannot: gone (vacuumed after
        waiting longer than the retention, or deleted by hand). Checked before PostgreSQL is
        touched, so that PostgreSQL and the lake never take different runs."""
        from azure.core.exceptions import ResourceNotFoundError

        ref = request["outputs"].get("lake", {}).get("staged")
        if not ref:
            return None
        try:
            staged = json.loads(self.store.read_bytes(ref["container"], ref["name"]))
        except (ResourceNotFoundError, FileNotFoundError):
            return f"the staged lake commit {ref['name']} is gone"
        for table in staged["tables"].values():
            root = layout.table_path(request["dataset"], table["table"])
            have = {i.name for i in self.store.list(layout.CURATED, f"{root}/_source_key={request['source_key']}/")}
            missing = [f["path"] for f in table["files"] if f"{root}/{f['path']}" not in have]
            if missing:
                return f"{len(missing)} staged lake file(s) of {table['table']} are gone, e.g. {missing[0]}"
        return None


def _try_record_failure(conn: Connection, schema: str, request: Manifest, exc: BaseException) -> None:
    try:
        if not conn.closed and not conn.broken:
            ledger.record_failure(conn, schema, request, type(exc).__name__, str(exc))
    except Exception:  # noqa: BLE001 - the database may be the thing that is down
        pass
