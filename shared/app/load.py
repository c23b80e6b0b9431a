"""Load a run's aggregates into PostgreSQL: binary COPY, per-file replace, ledger, one transaction.

    COPY (binary) ─▶ temp staging tables        (private to this transaction)
    pg_advisory_xact_lock(dataset, source blob) (serialises loads of the same source)
    ledger: already loaded? a newer version loaded? ─▶ skip, recorded
    DELETE the source's rows; INSERT from staging (per-file replace)
    ledger row ─▶ loaded
    COMMIT

Because the replace and the ledger row commit together, a message delivered twice, a load
killed half way or two versions racing can never leave a file counted twice or half. The
lock is transaction-scoped, which stays correct behind PgBouncer in transaction mode (as
Azure's built-in PgBouncer runs), where a session lock would leak to other clients.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from psycopg import Connection, sql

from shared.app import telemetry
from shared.app.retries import is_transient
from shared.core import layout
from shared.core.contract import Contract
from shared.core.errors import PipelineError
from shared.postgres import copy_binary, ledger, warehouse
from shared.postgres.errors import is_permanent_database_error
from shared.storage.blobs import Store

log = logging.getLogger("pipeline.load")


@dataclass
class Outcome:
    status: str  # loaded | rejected | superseded | duplicate | stale | failed
    source_blob: str
    run_id: str
    rows: dict[str, int] = field(default_factory=dict)
    detail: str = ""
    seconds: float = 0.0


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

    def prepare(self, conn: Connection, contract: Contract | None) -> None:
        if not self._ledger_ready:
            ledger.ensure(conn, self.schema)
            self._ledger_ready = True
        if contract is not None and (contract.dataset, contract.version) not in self._ready:
            warehouse.ensure(conn, contract, self.schema, self.reader_role)
            self._ready.add((contract.dataset, contract.version))

    def load(self, request: dict[str, Any]) -> Outcome:
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
        outcome.seconds = time.perf_counter() - started
        telemetry.count_file(request["dataset"], "load", outcome.status)
        log.info(
            "load %s: %s", request["source"]["blob"], outcome.status,
            extra={"run_id": request["run_id"], "dataset": request["dataset"], "source_blob": request["source"]["blob"],
                   "status": outcome.status, "seconds": round(outcome.seconds, 3)},
        )  # fmt: skip
        self._tidy(conn, request, outcome)
        return outcome

    def _tidy(self, conn: Connection, request: dict[str, Any], outcome: Outcome) -> None:
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
        except Exception as exc:
            if is_transient(exc):
                log.warning("tidying the outputs of %s failed; the message will come back: %s", request["source"]["blob"], exc)
                raise
            log.warning("tidying the outputs of %s failed: %s", request["source"]["blob"], exc)

    def _load(self, conn: Connection, request: dict[str, Any], contract: Contract | None) -> Outcome:
        blob = request["source"]["blob"]
        run_id = request["run_id"]
        if request["status"] != "succeeded" or contract is None:
            with conn.transaction():
                _lock(conn, request["dataset"], blob)
                ledger.record(conn, self.schema, request, ledger.REJECTED)
            return Outcome("rejected", blob, run_id, detail=(request.get("error") or {}).get("code", "unknown_dataset"))
        if request.get("contract_version") != contract.version:
            detail = f"produced under contract v{request.get('contract_version')}, current is v{contract.version}: re-ingest"
            with conn.transaction():
                ledger.record(conn, self.schema, request, ledger.FAILED, error_code="stale_contract", error_detail=detail)
            return Outcome("stale", blob, run_id, detail=detail)
        # Under the source's lock, so that a skip is decided on committed outcomes only, and an
        # older version is recorded as superseded whether it is found out early or late.
        with conn.transaction():
            _lock(conn, contract.dataset, blob)
            early = self._skip_reason(conn, request, contract)
            if early == "superseded":
                ledger.record(conn, self.schema, request, ledger.SUPERSEDED)
        if early:
            return Outcome(early, blob, run_id)

        scratch = Path(tempfile.mkdtemp(prefix="load-"))
        rows: dict[str, int] = {}
        try:
            frames = self._fetch(request, contract, scratch)
            with conn.transaction():
                staged = {name: _stage(conn, shape, frames[name]) for name, shape in warehouse.tables(contract) if name in frames}
                _lock(conn, contract.dataset, blob)
                late = self._skip_reason(conn, request, contract)
                if late == "superseded":
                    ledger.record(conn, self.schema, request, ledger.SUPERSEDED)
                if not late:
                    for name, shape in warehouse.tables(contract):
                        rows[name] = _replace(conn, shape, staged.get(name), blob, run_id)
                    ledger.record(conn, self.schema, request, ledger.LOADED)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if late:
            return Outcome(late, blob, run_id)
        return Outcome("loaded", blob, run_id, rows=rows)

    def _skip_reason(self, conn: Connection, request: dict[str, Any], contract: Contract) -> str | None:
        """'duplicate' if this version is already loaded under this contract version,
        'superseded' if a newer version of the blob is loaded."""
        src = request["source"]
        row = ledger.get(conn, self.schema, src["blob"], src["etag"])
        already = row and row["status"] == ledger.LOADED and row["contract_version"] == contract.version
        if already and (not request.get("force") or row["run_id"] == request["run_id"]):  # type: ignore[index]
            return "duplicate"
        cur = ledger.current(conn, self.schema, src["blob"])
        if cur and cur["etag"] != src["etag"] and cur["last_modified"] is not None:
            from datetime import datetime

            mine = datetime.fromisoformat(src["last_modified"])
            if cur["last_modified"] > mine:
                return "superseded"
            if cur["last_modified"] == mine and not self._is_current_in_raw(src):
                # Last-Modified has one-second resolution: two versions written within the same
                # second tie. The version in raw now is the newer one; any other is superseded.
                return "superseded"
        return None

    def _is_current_in_raw(self, src: dict[str, Any]) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.store.info(src.get("container") or layout.RAW, src["blob"]).etag == src["etag"]
        except (ResourceNotFoundError, FileNotFoundError):
            return False  # deleted since: keep what is loaded

    def _fetch(self, request: dict[str, Any], contract: Contract, scratch: Path) -> dict[str, pl.DataFrame]:
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

    def _delete_runs(self, request: dict[str, Any], chosen: Callable[[str], bool]) -> None:
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


def _lock(conn: Connection, dataset: str, blob: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{dataset}/{blob}",))


_COPY_TYPES = {"double precision": "float8", "bigint": "int8", "boolean": "bool"}


def copy_type(pgtype: str) -> str:
    base = pgtype.split("(", 1)[0].strip()
    return _COPY_TYPES.get(base, base)


def _stage(conn: Connection, shape: warehouse.TableShape, df: pl.DataFrame) -> sql.Identifier:
    """COPY a frame into a temporary table that disappears at commit.

    A ``numeric(38,0)`` column whose values all fit in 64 bits is staged as ``bigint``: the
    INSERT from staging casts it back exactly, and binary int8 is 8 bytes that PostgreSQL reads
    as is, where a numeric is up to 18 bytes of base-10000 digits to parse."""
    stage = sql.Identifier(f"stage_{shape.table}"[:63])
    columns = [(n, _staging_type(t, df[n])) for n, t in shape.columns]
    cols = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns]
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(stage, sql.SQL(", ").join(cols)))
    frame = df.select(pl.col(n).cast(pl.Int64) if t == "bigint" and df[n].dtype != pl.Int64 else pl.col(n) for n, t in columns)
    copy_rows(conn, stage, columns, frame)
    return stage


def _staging_type(pgtype: str, values: pl.Series) -> str:
    if pgtype.replace(" ", "") == "numeric(38,0)" and isinstance(values.dtype, pl.Decimal | pl.Int128 | pl.Int64):
        whole = values.to_physical() if isinstance(values.dtype, pl.Decimal) else values
        if whole.is_empty() or whole.drop_nulls().is_between(-(1 << 63), (1 << 63) - 1).all():
            return "bigint"
    return pgtype


def copy_rows(
    conn: Connection,
    table: sql.Composable,
    columns: list[tuple[str, str]],
    rows: pl.DataFrame | Iterable[tuple[Any, ...]],
) -> None:
    """Binary COPY of rows into ``table``. A polars frame is encoded whole, without Python per
    row (``shared.postgres.copy_binary``; its rows arrive in another order, which a table does not
    keep anyway); other rows go through psycopg, with the types set so that it dumps binary."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(sql.Identifier(n) for n, _ in columns)
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        if isinstance(rows, pl.DataFrame) and all(copy_binary.supported(t) for _, t in columns):
            for piece in copy_binary.encode(rows.select(n for n, _ in columns), [t for _, t in columns]):
                copy.write(piece)
            return
        copy.set_types([copy_type(t) for _, t in columns])
        for row in rows.iter_rows() if isinstance(rows, pl.DataFrame) else rows:
            copy.write_row(row)


def _replace(conn: Connection, shape: warehouse.TableShape, stage: sql.Identifier | None, blob: str, run_id: str) -> int:
    target = sql.SQL("{}.{}").format(sql.Identifier(shape.schema), sql.Identifier(shape.table))
    conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(target, sql.Identifier(warehouse.SOURCE_COL)), (blob,))
    if stage is None:
        return 0
    names = sql.SQL(", ").join(sql.Identifier(n) for n, _ in shape.columns)
    cur = conn.execute(
        sql.SQL("INSERT INTO {} ({}, {}, {}) SELECT {}, %s, %s FROM {}").format(
            target, names, sql.Identifier(warehouse.SOURCE_COL), sql.Identifier(warehouse.RUN_COL), names, stage
        ),
        (blob, run_id),
    )
    return cur.rowcount


def _try_record_failure(conn: Connection, schema: str, request: dict[str, Any], exc: BaseException) -> None:
    try:
        if not conn.closed and not conn.broken:
            ledger.record_failure(conn, schema, request, type(exc).__name__, str(exc))
    except Exception:  # noqa: BLE001 - the database may be the thing that is down
        pass


def remove_source(conn: Connection, contract: Contract, blob: str, schema: str) -> dict[str, int]:
    """Remove a source blob's contribution from every table (explicit operator action)."""
    removed = {}
    with conn.transaction():
        _lock(conn, contract.dataset, blob)
        for name, shape in warehouse.tables(contract):
            cur = conn.execute(
                sql.SQL("DELETE FROM {}.{} WHERE {} = %s").format(
                    sql.Identifier(shape.schema), sql.Identifier(shape.table), sql.Identifier(warehouse.SOURCE_COL)
                ),
                (blob,),
            )
            removed[name] = cur.rowcount
        conn.execute(
            sql.SQL("UPDATE {} SET status = 'removed', updated_at = now() WHERE source_blob = %s AND status = 'loaded'").format(
                ledger.table(schema)
            ),
            (blob,),
        )
    return removed
