"""The load ledger: one row per source blob version, the single record of what happened to it.

A version is a blob name plus its ETag. The row says whether that version was loaded,
refused, superseded or failed, under which run and contract version, with its row counts,
attempts, error code and detail, and timings. It is written in the same transaction as the
per-file replace, so the ledger and the tables can never disagree: if the row says
``loaded``, exactly that run's rows are in the tables.

The statuses are ``shared.core.documents.LedgerStatus`` (and a CHECK constraint on the table
holds the SQL to the same list). ``requeued_at`` and ``requeues`` record re-drives by the
nightly job, without touching the status, so that a version's outcome stays what it was
until a new run changes it.

Every statement on the ledger table is in this module.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from psycopg import Connection, sql

from shared.core.documents import (
    DONE,
    FAILED,
    LEDGER_STATUSES,
    LOADED,
    QUEUED,
    REJECTED,
    REMOVED,
    SUPERSEDED,
    LedgerStatus,
    Manifest,
)
from shared.postgres import locks

__all__ = [
    "DONE", "FAILED", "LOADED", "QUEUED", "REJECTED", "REMOVED", "SUPERSEDED",
    "all_rows", "current", "ensure", "get", "latest", "mark_removed", "mark_requeued", "record", "record_failure",
    "status_report", "table",
]  # fmt: skip

STATUS_CHECK = "ledger_status_known"


def _literal(*statuses: LedgerStatus) -> sql.Composable:
    """A status, or a list of them, as SQL literals: the SQL says what the Literal type says."""
    return sql.SQL(", ").join(sql.Literal(s) for s in statuses)


def table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier("ledger"))


def ensure(conn: Connection, schema: str) -> None:
    with conn.transaction():
        locks.lock(conn, locks.LEDGER)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("""
            CREATE TABLE IF NOT EXISTS {} (
                source_blob           text        NOT NULL,
                source_etag           text        NOT NULL,
                dataset               text        NOT NULL,
                source_last_modified  timestamptz,
                source_size           bigint,
                run_id                text        NOT NULL,
                contract_version      integer,
                status                text        NOT NULL,
                rows_read             bigint,
                rows_valid            bigint,
                rows_rejected         bigint,
                rows_duplicate        bigint,
                groups                jsonb,
                attempts              integer     NOT NULL DEFAULT 0,
                error_code            text,
                error_detail          text,
                manifest              jsonb,
                timings               jsonb,
                first_seen_at         timestamptz NOT NULL DEFAULT now(),
                ingested_at           timestamptz,
                loaded_at             timestamptz,
                updated_at            timestamptz NOT NULL DEFAULT now(),
                requeued_at           timestamptz,
                requeues              integer     NOT NULL DEFAULT 0,
                PRIMARY KEY (source_blob, source_etag)
            )""").format(table(schema))
        )
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS ledger_status_idx ON {} (status, updated_at)").format(table(schema)))
        _ensure_status_check(conn, schema)
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS ledger_dataset_idx ON {} (dataset, source_blob)").format(table(schema)))


def _ensure_status_check(conn: Connection, schema: str) -> None:
    """CHECK (status IN (...LedgerStatus)): replaced when the list of statuses changes."""
    wanted = sql.SQL("CHECK (status IN ({}))").format(_literal(*LEDGER_STATUSES)).as_string(conn)
    row = conn.execute(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE n.nspname = %s AND c.conname = %s",
        (schema, STATUS_CHECK),
    ).fetchone()
    if row and set(re.findall(r"'([^']*)'", row[0])) == set(LEDGER_STATUSES):
        return
    if row:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table(schema), sql.Identifier(STATUS_CHECK)))
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(table(schema), sql.Identifier(STATUS_CHECK), sql.SQL(wanted))
    )


def current(conn: Connection, schema: str, source_blob: str) -> dict[str, Any] | None:
    """The version of a source whose contribution is in the tables now, if any."""
    cur = conn.execute(
        sql.SQL(
            "SELECT source_etag, source_last_modified, run_id, contract_version FROM {} "
            "WHERE source_blob = %s AND status = {} ORDER BY loaded_at DESC LIMIT 1"
        ).format(table(schema), _literal(LOADED)),
        (source_blob,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return {"etag": row[0], "last_modified": row[1], "run_id": row[2], "contract_version": row[3]}


def get(conn: Connection, schema: str, source_blob: str, etag: str) -> dict[str, Any] | None:
    cur = conn.execute(
        sql.SQL("SELECT * FROM {} WHERE source_blob = %s AND source_etag = %s").format(table(schema)), (source_blob, etag)
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d.name for d in cur.description or []], row, strict=True))


def record(
    conn: Connection,
    schema: str,
    manifest: Manifest,
    status: LedgerStatus,
    *,
    error_code: str | None = None,
    error_detail: str | None = None,
) -> None:
    """Upsert the ledger row of the manifest's source version (in the caller's transaction).

    ``loaded_at`` is the clock time of this write, which the loader makes under the source's
    lock: the order of ``loaded_at`` is then the order in which loads replaced each other, which
    ``current()`` relies on. (``now()`` is when the transaction began, and of two loads of a
    source the one that began first may take the lock second.)"""
    src = manifest["source"]
    counts = manifest["counts"]
    err = manifest.get("error") or {"code": None, "detail": None}
    conn.execute(
        sql.SQL("""
        INSERT INTO {t} AS l (source_blob, source_etag, dataset, source_last_modified, source_size, run_id,
            contract_version, status, rows_read, rows_valid, rows_rejected, rows_duplicate, groups, attempts,
            error_code, error_detail, manifest, timings, ingested_at, loaded_at, updated_at)
        VALUES (%(blob)s, %(etag)s, %(dataset)s, %(lm)s, %(size)s, %(run)s, %(cv)s, %(status)s, %(read)s, %(valid)s,
            %(rejected)s, %(dup)s, %(groups)s, 1, %(code)s, %(detail)s, %(manifest)s, %(timings)s, %(ingested)s,
            CASE WHEN %(status)s = {loaded} THEN clock_timestamp() END, now())
        ON CONFLICT (source_blob, source_etag) DO UPDATE SET
            run_id = excluded.run_id, contract_version = excluded.contract_version, status = excluded.status,
            rows_read = excluded.rows_read, rows_valid = excluded.rows_valid, rows_rejected = excluded.rows_rejected,
            rows_duplicate = excluded.rows_duplicate, groups = excluded.groups, attempts = l.attempts + 1,
            error_code = excluded.error_code, error_detail = excluded.error_detail, manifest = excluded.manifest,
            timings = excluded.timings, ingested_at = excluded.ingested_at,
            loaded_at = COALESCE(excluded.loaded_at, l.loaded_at), updated_at = now()
        """).format(t=table(schema), loaded=_literal(LOADED)),
        {
            "blob": src["blob"],
            "etag": src["etag"],
            "dataset": manifest["dataset"],
            "lm": datetime.fromisoformat(src["last_modified"]) if src.get("last_modified") else None,
            "size": src.get("size"),
            "run": manifest["run_id"],
            "cv": manifest.get("contract_version"),
            "status": status,
            "read": counts.get("rows_read"),
            "valid": counts.get("rows_valid"),
            "rejected": counts.get("rows_rejected"),
            "dup": counts.get("rows_duplicate"),
            "groups": json.dumps(counts.get("groups", {})),
            "code": error_code or err.get("code"),
            "detail": error_detail or err.get("detail"),
            "manifest": json.dumps(manifest, default=str),
            "timings": json.dumps(manifest.get("timings", {})),
            "ingested": manifest.get("created_at"),
        },
    )
    if status == LOADED:
        _supersede_others(conn, schema, src["blob"], src["etag"])


def _supersede_others(conn: Connection, schema: str, source_blob: str, etag: str) -> None:
    """Once a version is loaded, the source's other loaded version no longer contributes: say
    so (``superseded``), so that a blob has at most one ``loaded`` row, the one in the tables."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET status = {}, updated_at = now() WHERE source_blob = %s AND source_etag <> %s AND status = {}"
        ).format(table(schema), _literal(SUPERSEDED), _literal(LOADED)),
        (source_blob, etag),
    )


def record_failure(conn: Connection, schema: str, manifest: Manifest, code: str, detail: str) -> None:
    """Count a failed attempt in its own transaction; never downgrades a version already loaded."""
    src = manifest["source"]
    with conn.transaction():
        conn.execute(
            sql.SQL("""
            INSERT INTO {t} AS l (source_blob, source_etag, dataset, run_id, contract_version, status, attempts,
                error_code, error_detail, manifest, updated_at)
            VALUES (%s, %s, %s, %s, %s, {failed}, 1, %s, %s, %s, now())
            ON CONFLICT (source_blob, source_etag) DO UPDATE SET
                attempts = l.attempts + 1, error_code = excluded.error_code, error_detail = excluded.error_detail,
                updated_at = now(),
                status = CASE WHEN l.status IN ({done}) THEN l.status ELSE {failed} END
            """).format(t=table(schema), failed=_literal(FAILED), done=_literal(*DONE)),
            (
                src["blob"],
                src["etag"],
                manifest["dataset"],
                manifest["run_id"],
                manifest.get("contract_version"),
                code,
                detail[:4000],
                json.dumps(manifest, default=str),
            ),
        )


def all_rows(conn: Connection, schema: str, dataset: str | None = None) -> list[dict[str, Any]]:
    """Every ledger row (of one dataset), the small columns only: for the nightly scan."""
    query = sql.SQL(
        "SELECT source_blob, source_etag, dataset, status, contract_version, error_code, attempts, updated_at, "
        "requeued_at, requeues, source_last_modified FROM {}"
    ).format(table(schema))
    cur = conn.execute(query + sql.SQL(" WHERE dataset = %s"), (dataset,)) if dataset else conn.execute(query)
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def mark_requeued(conn: Connection, schema: str, versions: list[tuple[str, str, str, datetime | None]]) -> None:
    """Note that (blob, etag, dataset, last_modified) versions were re-driven now."""
    for blob, etag, dataset, last_modified in versions:
        conn.execute(
            sql.SQL("""
            INSERT INTO {t} AS l (source_blob, source_etag, dataset, source_last_modified, run_id, status, requeued_at, requeues)
            VALUES (%s, %s, %s, %s, '', {queued}, now(), 1)
            ON CONFLICT (source_blob, source_etag) DO UPDATE SET requeued_at = now(), requeues = l.requeues + 1
            """).format(t=table(schema), queued=_literal(QUEUED)),
            (blob, etag, dataset, last_modified),
        )


def mark_removed(conn: Connection, schema: str, source_blob: str) -> None:
    """The source's loaded version no longer contributes (``forget``, in the caller's transaction)."""
    conn.execute(
        sql.SQL("UPDATE {} SET status = {}, updated_at = now() WHERE source_blob = %s AND status = {}").format(
            table(schema), _literal(REMOVED), _literal(LOADED)
        ),
        (source_blob,),
    )


def latest(conn: Connection, schema: str, source_blob: str) -> dict[str, Any] | None:
    """The most recently updated row of a source blob, whatever its version and status."""
    cur = conn.execute(
        sql.SQL("SELECT * FROM {} WHERE source_blob = %s ORDER BY updated_at DESC LIMIT 1").format(table(schema)),
        (source_blob,),
    )
    row = cur.fetchone()
    return dict(zip([d.name for d in cur.description or []], row, strict=True)) if row else None


def status_report(conn: Connection, schema: str, *, since: datetime, dataset: str | None, limit: int) -> dict[str, Any]:
    """What ``status`` shows of the ledger: rows updated since ``since`` (of one dataset), and,
    whenever they happened, the blobs whose latest row is failed or rejected (``outstanding``:
    a failure of last week that nothing fixed still needs a person today)."""
    t = table(schema)
    where = sql.SQL("updated_at >= %s") + (sql.SQL(" AND dataset = %s") if dataset else sql.SQL(""))
    params: list[Any] = [since, dataset] if dataset else [since]
    by_status = dict(
        conn.execute(sql.SQL("SELECT status, count(*) FROM {} WHERE {} GROUP BY 1").format(t, where), params).fetchall()
    )
    failures = conn.execute(
        sql.SQL(
            "SELECT status, coalesce(error_code, '?'), count(*), min(source_blob) FROM {} WHERE {} "
            "AND status IN ({}) GROUP BY 1, 2 ORDER BY 3 DESC"
        ).format(t, where, _literal(FAILED, REJECTED)),
        params,
    ).fetchall()
    lags = conn.execute(
        sql.SQL(
            "SELECT extract(epoch FROM loaded_at - source_last_modified)::float8 FROM {} WHERE {} "
            "AND status = {} AND loaded_at IS NOT NULL AND source_last_modified IS NOT NULL"
        ).format(t, where, _literal(LOADED)),
        params,
    ).fetchall()
    latest = sql.SQL(
        "SELECT DISTINCT ON (source_blob) source_blob, status, error_code FROM {} {} ORDER BY source_blob, updated_at DESC"
    ).format(t, sql.SQL("WHERE dataset = %s") if dataset else sql.SQL(""))
    outstanding = conn.execute(
        sql.SQL(
            "SELECT status, coalesce(error_code, '?'), count(*), min(source_blob) FROM ({}) latest "
            "WHERE status IN ({}) GROUP BY 1, 2 ORDER BY 3 DESC"
        ).format(latest, _literal(FAILED, REJECTED)),
        [dataset] if dataset else [],
    ).fetchall()
    recent = conn.execute(
        sql.SQL(
            "SELECT updated_at, status, source_blob, rows_read, rows_valid, rows_rejected, rows_duplicate, error_code, attempts "
            "FROM {} WHERE {} ORDER BY updated_at DESC LIMIT %s"
        ).format(t, where),
        [*params, limit],
    ).fetchall()
    return {
        "runs_by_status": by_status,
        "failures": [{"status": s, "reason": r, "count": n, "example": ex} for s, r, n, ex in failures],
        "outstanding": [{"status": s, "reason": r, "count": n, "example": ex} for s, r, n, ex in outstanding],
        "lag_seconds": [float(r[0]) for r in lags],
        "recent": [
            dict(zip(("at", "status", "blob", "read", "valid", "rejected", "duplicate", "error", "attempts"), r, strict=True))
            for r in recent
        ],
    }
