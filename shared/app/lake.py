"""The lake follows the ledger: what a source's partition of every Delta table holds, and when.

Ingest stages a run's files in the tables but commits nothing. The commit is made here, once
PostgreSQL holds the run, by ``sync_source``: under the source's advisory lock (the one every
load and ``forget`` of the source takes), it reads which run the ledger says is loaded and makes
every table's partition of the source hold exactly that run's files, or nothing when no run is
(a ``forget``, or a source never loaded). So:

* a load that fails, is a duplicate, or is superseded changes PostgreSQL not at all, and the
  lake not at all: both keep the source's previous version;
* two loaders of one source publish in the order PostgreSQL committed them (the lock);
* a commit is recognised when it is already there (its ``txn`` says which run), so a load
  retried after a crash between PostgreSQL's commit and the lake's commits nothing twice;
* a crash there leaves the lake behind PostgreSQL until the message comes back (the loader
  raises, the host redelivers, the ledger says ``duplicate``, the sync runs again), or until
  the nightly ``reconcile``, which syncs every source whose partition disagrees with the ledger.

``maintain`` is the nightly upkeep of every table, under the nightly lock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from psycopg import Connection

from shared.app import settings
from shared.core import lake, layout
from shared.core.contract import Contract
from shared.postgres import ledger, locks
from shared.storage import lake as store_lake
from shared.storage.blobs import Store

__all__ = ["commit_metadata", "maintain", "reconcile", "sync_source", "table_uris"]

log = logging.getLogger("pipeline.lake")


def table_uris(contract: Contract) -> dict[str, str]:
    """Output name -> the URI delta-rs opens its table at."""
    return {o: store_lake.table_uri(layout.table_path(contract.dataset, t)) for o, t in lake.tables(contract).items()}


def commit_metadata(operation: str, run_id: str, contract: Contract, **extra: Any) -> dict[str, Any]:
    """What every commit of the pipeline says about itself in the table's history: the
    pipeline's keys, and ``userMetadata`` (what Spark's DESCRIBE HISTORY shows) as JSON."""
    keys = {"operation": operation, "run_id": run_id, "dataset": contract.dataset, "contract_version": contract.version}
    keys |= {k: v for k, v in extra.items() if v is not None}
    return {**{f"pipeline.{k}": v for k, v in keys.items()}, "userMetadata": json.dumps(keys, default=str)}


def sync_source(
    conn: Connection, schema: str, store: Store, contract: Contract, blob: str, *, by: str, options: dict[str, str] | None = None
) -> tuple[dict[str, int | None], store_lake.Counts]:
    """Make every table's partition of ``blob`` hold what the ledger says PostgreSQL holds.
    Returns the version each output's commit made (None: nothing to do) and what it cost; the
    cost's ``run_id`` is the run the partition now holds ("" when none)."""
    options = options if options is not None else store_lake.storage_options()
    key = layout.source_key(blob)
    counts = store_lake.Counts()
    versions: dict[str, int | None] = {}
    with conn.transaction():
        locks.lock_source(conn, contract.dataset, blob)
        current = ledger.current(conn, schema, blob)
        staged = _staged_commit(conn, schema, store, blob, current) if current else None
        counts.run_id = staged["run_id"] if staged else ""
        if current and staged is None:
            log.warning("%s is loaded by a run that staged nothing for the lake (made before it): re-ingest it", blob)
            return versions, counts
        for output, uri in table_uris(contract).items():
            if staged is None:
                meta = commit_metadata("remove", "", contract, source_blob=blob, source_key=key, by=by)
                versions[output], cost = store_lake.remove(
                    uri, options, source_key=key, version=lake.removed_version(), metadata=meta
                )
            elif output not in staged["tables"]:
                continue  # an output the run's contract did not have
            else:
                run = staged["run_id"]
                meta = commit_metadata("publish", run, contract, source_blob=blob, source_key=key, by=by)
                meta["pipeline.contract_version"] = staged["contract_version"]
                versions[output], cost = store_lake.publish(
                    uri, options, staged["tables"][output], source_key=key, version=lake.run_version(run), metadata=meta,
                    name=f"{contract.dataset}.{lake.tables(contract)[output]}",
                    configuration={"delta.deletedFileRetentionDuration": f"interval {settings.lake_retention_hours()} hours"},
                )  # fmt: skip
            counts.add(cost)
    return versions, counts


def _staged_commit(conn: Connection, schema: str, store: Store, blob: str, current: dict[str, Any]) -> lake.StagedCommit | None:
    """The staged commit of the run the ledger says is loaded (from its manifest's reference)."""
    row = ledger.get(conn, schema, blob, current["etag"]) or {}
    manifest = row.get("manifest") or {}
    if isinstance(manifest, str):
        manifest = json.loads(manifest)
    ref = manifest.get("outputs", {}).get("lake", {}).get("staged")
    if not ref:
        return None
    return json.loads(store.read_bytes(ref["container"], ref["name"]))


def reconcile(
    conn: Connection, schema: str, store: Store, contracts: Mapping[str, Contract], *, options: dict[str, str] | None = None
) -> dict[str, int]:
    """Sync every source whose partition in a dataset's tables disagrees with the ledger: loaded
    by another run than the lake has, or in the lake but forgotten. The nightly net under the
    loader's own publishing (a message parked in poison between the two commits)."""
    options = options if options is not None else store_lake.storage_options()
    done = {"checked": 0, "synced": 0, "left_alone": 0}
    for contract in contracts.values():
        rows = ledger.all_rows(conn, schema, contract.dataset)
        loaded = {r["source_blob"] for r in rows if r["status"] == ledger.LOADED}
        forgotten = {r["source_blob"] for r in rows if r["status"] == ledger.REMOVED} - loaded
        runs = {b: cur["run_id"] for b in loaded if (cur := ledger.current(conn, schema, b))}
        wanted = {layout.source_key(b): lake.run_version(r) for b, r in runs.items()}
        blobs = {layout.source_key(b): b for b in runs | dict.fromkeys(forgotten)}
        stale: set[str] = set()
        for uri in table_uris(contract).values():
            state = store_lake.partitions(uri, options, wanted)
            held = {} if state is None else state
            stale |= {k for k, v in wanted.items() if held.get(k) != v}
            stale |= {k for k in held if k not in wanted and held[k] != lake.removed_version()}
        done["checked"] += len(wanted)
        for key in sorted(stale):
            if key not in blobs:
                # in the lake, and the ledger neither says loaded nor forgotten (a version refused
                # after it was loaded leaves its rows in PostgreSQL): not removed on a guess
                log.warning("lake partition %s of %s has no loaded or forgotten source in the ledger", key, contract.dataset)
                done["left_alone"] += 1
                continue
            sync_source(conn, schema, store, contract, blobs[key], by="reconcile", options=options)
            done["synced"] += 1
    return done


def maintain(
    contracts: Mapping[str, Contract], run_id: str, *, retention_hours: int, options: dict[str, str] | None = None
) -> dict[str, Any]:
    """Compact, checkpoint and vacuum every table of every dataset; the caller holds the nightly
    lock. A table that fails is reported and the others go on."""
    options = options if options is not None else store_lake.storage_options()
    out: dict[str, Any] = {}
    for contract in contracts.values():
        meta = commit_metadata("maintain", run_id, contract, by="nightly")
        for output, uri in table_uris(contract).items():
            try:
                out[f"{contract.dataset}/{output}"] = store_lake.maintain(
                    uri, options, retention_hours=retention_hours, metadata=meta
                )
            except Exception as exc:  # noqa: BLE001 - one table's trouble must not stop the others'
                log.warning("maintenance of %s failed: %s", uri, exc)
                out[f"{contract.dataset}/{output}"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return out
