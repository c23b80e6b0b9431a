"""The nightly re-drive: find every raw blob version that has no good outcome, and ask for a run.

Events get lost, runs fail, contracts change. Every night this compares the ``raw`` container
with the ledger and re-queues, in a bounded batch, each blob version that:

* has no ledger row at all (its event was missed, or it replaced an earlier version);
* failed, and has waited out its back-off (1 h, 2 h, 4 h, … capped at a day);
* was loaded or refused under an older contract version than the current one;
* was refused ``unknown_dataset`` and its dataset has a contract now (``contract_added``).

A version that landed in the last ``grace`` minutes is left alone: its event is probably still
on its way. Two timers firing together do no double work: the plan is made under a
transaction-scoped advisory lock that the second one fails to take, and every re-driven
version is stamped ``requeued_at`` so that it is not sent again within its back-off.

After the plan, ``maintain_lake`` looks after the curated zone's Delta tables under the same
lock: it syncs any source whose lake partition disagrees with the ledger, then compacts,
checkpoints and vacuums every table (removed files are kept ``LAKE_RETENTION_HOURS`` for
readers travelling back in time); each commit names the nightly run in the table's history.

Blobs that were loaded but have since been deleted from ``raw`` are counted and reported, never
removed silently: removing a contribution is an explicit command (``python -m shared forget``).
Blobs older than the raw retention period (``RAW_RETENTION_DAYS``, the storage lifecycle rule)
are counted apart, as aged out: their deletion is expected and their contribution stays.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import Connection

from shared.app import lake
from shared.core import layout
from shared.core.contract import Contract
from shared.postgres import ledger, locks
from shared.storage.blobs import Store

log = logging.getLogger("pipeline.reprocess")


def backoff(attempts: int) -> timedelta:
    return min(timedelta(hours=1) * (2 ** max(0, attempts - 1)), timedelta(days=1))


@dataclass
class Plan:
    requests: list[dict[str, Any]] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    deferred: int = 0  # due, but beyond this run's batch limit
    backing_off: int = 0
    deleted_from_raw: list[str] = field(default_factory=list)
    aged_out: int = 0  # loaded, then deleted by the raw retention policy: expected
    locked_out: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "requeued": len(self.requests),
            "reasons": self.reasons,
            "deferred_to_next_run": self.deferred,
            "backing_off": self.backing_off,
            "loaded_but_deleted_from_raw": len(self.deleted_from_raw),
            "aged_out_of_raw": self.aged_out,
            "skipped_another_run_holds_the_lock": self.locked_out,
        }


def make_plan(
    store: Store,
    conn: Connection,
    schema: str,
    contracts: Mapping[str, Contract],
    *,
    now: datetime | None = None,
    grace: timedelta,
    limit: int,
    prefix: str = "",
    dry_run: bool = False,
    retention: timedelta | None = None,
) -> Plan:
    """Decide what to re-drive and stamp it in the ledger, all in one locked transaction
    (``dry_run``: decide only, for ``status``)."""
    now = now or datetime.now(UTC)
    plan = Plan()
    with conn.transaction():
        if not dry_run and not locks.try_lock(conn, locks.NIGHTLY):
            plan.locked_out = True
            return plan
        rows = {(r["source_blob"], r["source_etag"]): r for r in ledger.all_rows(conn, schema)}
        live: set[str] = set()
        due: list[tuple[datetime, str, Any, str]] = []
        for info in store.list(layout.RAW, prefix):
            live.add(info.name)
            if not layout.accepted(info.name) or info.last_modified > now - grace:
                continue
            reason = _reason(rows, info, contracts, now)
            if reason == "backing_off":
                plan.backing_off += 1
            elif reason:
                due.append((info.last_modified, info.name, info, reason))
        due.sort(key=lambda d: (d[0], d[1]))
        plan.deferred = max(0, len(due) - limit)
        stamped = []
        for _, name, info, reason in due[:limit]:
            plan.reasons[reason] = plan.reasons.get(reason, 0) + 1
            plan.requests.append(
                {"container": layout.RAW, "blob": name, "etag": info.etag, "reason": reason, "requested_at": now.isoformat()}
            )
            stamped.append((name, info.etag, layout.dataset_of(name) or layout.UNKNOWN_DATASET, info.last_modified))
        if not dry_run:
            ledger.mark_requeued(conn, schema, stamped)
        gone = {
            blob: r
            for (blob, _), r in rows.items()
            if r["status"] == ledger.LOADED and blob not in live and blob.startswith(prefix)
        }
        old = now - retention if retention else None
        aged = {b for b, r in gone.items() if old and r.get("source_last_modified") and r["source_last_modified"] < old}
        plan.aged_out = len(aged)
        plan.deleted_from_raw = sorted(set(gone) - aged)
    if not dry_run:
        log.info("nightly re-drive: %s", json.dumps(plan.summary()), extra={"summary": plan.summary()})
    return plan


def _reason(
    rows: dict[tuple[str, str], dict[str, Any]], info: Any, contracts: Mapping[str, Contract], now: datetime
) -> str | None:
    row = rows.get((info.name, info.etag))
    if row is None:
        replaced = any(blob == info.name for blob, _ in rows)
        return "new_version" if replaced else "missed"
    requeued = row.get("requeued_at")
    status = row["status"]
    if status in (ledger.LOADED, ledger.REJECTED):
        contract = contracts.get(row["dataset"])
        if contract is None:
            return None
        if row["contract_version"] is not None and row["contract_version"] < contract.version:
            reason = "old_contract"
        elif status == ledger.REJECTED and row.get("error_code") == "unknown_dataset":
            reason = "contract_added"  # refused before its contract existed
        else:
            return None
        if requeued and requeued > now - backoff(row.get("requeues") or 1):
            return "backing_off"
        return reason
    if status in (ledger.SUPERSEDED, ledger.REMOVED):
        return None
    # failed, or queued and never heard of again
    attempts = max(row.get("attempts") or 0, row.get("requeues") or 0, 1)
    last = max(t for t in (row.get("updated_at"), requeued) if t is not None)
    if last > now - backoff(attempts):
        return "backing_off"
    return "failed" if status == ledger.FAILED else "missed"


def maintain_lake(
    store: Store,
    conn: Connection,
    schema: str,
    contracts: Mapping[str, Contract],
    *,
    retention_hours: int,
    run_id: str | None = None,
    options: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The lake's nightly upkeep, under the nightly lock (a second timer takes nothing and stops):
    reconcile every source with the ledger, then compact, checkpoint and vacuum every table."""
    run_id = run_id or layout.new_run_id()
    with conn.transaction():
        if not locks.try_lock(conn, locks.NIGHTLY):
            return {"run_id": run_id, "skipped_another_run_holds_the_lock": True}
        reconciled = lake.reconcile(conn, schema, store, contracts, options=options)
        tables = lake.maintain(contracts, run_id, retention_hours=retention_hours, options=options)
    summary = {"run_id": run_id, "reconciled": reconciled, "tables": tables}
    log.info("nightly lake upkeep: %s", json.dumps(summary, default=str), extra={"summary": summary})
    return summary
