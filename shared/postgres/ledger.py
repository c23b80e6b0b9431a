"""The load ledger: one row per source blob version, the single record of what happened to it.

A version is a blob name plus its ETag. The row says whether that version was loaded,
refused, superseded or failed, under which run and contract version, with its row counts,
attempts, error code and detail, and timings. It is written in the same transaction as the
per-file replace, so the ledger and the tables can never disagree: if the row says
``loaded``, exactly that run's rows are in the tables.

Statuses:
    loaded      the run's aggregates replaced the source's previous contribution
    rejected    the file was refused (quarantined); nothing was loaded
    failed      a load attempt failed; ``attempts`` and ``error_*`` say how (may still succeed)
    superseded  a newer version of the blob was already loaded; this one was skipped
    removed     the source's contribution was removed on request (blob deleted from raw)
    queued      the nightly job found the version with no run and asked for one

``requeued_at`` and ``requeues`` record re-drives by the nightly job, without touching the
status, so that a version's outcome stays what it was until a new run changes it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from psycopg import Connection, sql

LOADED, REJECTED, FAILED, SUPERSEDED, REMOVED, QUEUED = "loaded", "rejected", "failed", "superseded", "removed", "queued"
DONE = (LOADED, REJECTED, SUPERSEDED)
"""Outcomes after which a blob version needs nothing more (unless its contract changes)."""


def table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier("ledger"))


def ensure(conn: Connection, schema: str) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (0x4C45_4447_4552,))  # "LEDGER"
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
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS ledger_dataset_idx ON {} (dataset, source_blob)").format(table(schema)))


def current(conn: Connection, schema: str, source_blob: str) -> dict[str, Any] | None:
    """The version of a source whose contribution is in the tables now, if any."""
    cur = conn.execute(
        sql.SQL(
            "SELECT source_etag, source_last_modified, run_id, contract_version FROM {} "
            "WHERE source_blob = %s AND status = 'loaded' ORDER BY loaded_at DESC LIMIT 1"
        ).format(table(schema)),
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
    manifest: dict[str, Any],
    status: str,
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
    counts = manifest.get("counts", {})
    err = manifest.get("error") or {}
    conn.execute(
        sql.SQL("""
        INSERT INTO {t} AS l (source_blob, source_etag, dataset, source_last_modified, source_size, run_id,
            contract_version, status, rows_read, rows_valid, rows_rejected, rows_duplicate, groups, attempts,
            error_code, error_detail, manifest, timings, ingested_at, loaded_at, updated_at)
        VALUES (%(blob)s, %(etag)s, %(dataset)s, %(lm)s, %(size)s, %(run)s, %(cv)s, %(status)s, %(read)s, %(valid)s,
            %(rejected)s, %(dup)s, %(groups)s, 1, %(code)s, %(detail)s, %(manifest)s, %(timings)s, %(ingested)s,
            CASE WHEN %(status)s = 'loaded' THEN clock_timestamp() END, now())
        ON CONFLICT (source_blob, source_etag) DO UPDATE SET
            run_id = excluded.run_id, contract_version = excluded.contract_version, status = excluded.status,
            rows_read = excluded.rows_read, rows_valid = excluded.rows_valid, rows_rejected = excluded.rows_rejected,
            rows_duplicate = excluded.rows_duplicate, groups = excluded.groups, attempts = l.attempts + 1,
            error_code = excluded.error_code, error_detail = excluded.error_detail, manifest = excluded.manifest,
            timings = excluded.timings, ingested_at = excluded.ingested_at,
            loaded_at = COALESCE(excluded.loaded_at, l.loaded_at), updated_at = now()
        """).format(t=table(schema)),
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


def record_failure(conn: Connection, schema: str, manifest: dict[str, Any], code: str, detail: str) -> None:
    """Count a failed attempt in its own transaction; never downgrades a version already loaded."""
    src = manifest["source"]
    with conn.transaction():
        conn.execute(
            sql.SQL("""
            INSERT INTO {t} AS l (source_blob, source_etag, dataset, run_id, contract_version, status, attempts,
                error_code, error_detail, manifest, updated_at)
            VALUES (%s, %s, %s, %s, %s, 'failed', 1, %s, %s, %s, now())
            ON CONFLICT (source_blob, source_etag) DO UPDATE SET
                attempts = l.attempts + 1, error_code = excluded.error_code, error_detail = excluded.error_detail,
                updated_at = now(),
                status = CASE WHEN l.status IN ('loaded', 'rejected', 'superseded') THEN l.status ELSE 'failed' END
            """).format(t=table(schema)),
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
        "SELECT source_blob, source_etag, dataset, status, contract_version, attempts, updated_at, "
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
            VALUES (%s, %s, %s, %s, '', 'queued', now(), 1)
            ON CONFLICT (source_blob, source_etag) DO UPDATE SET requeued_at = now(), requeues = l.requeues + 1
            """).format(t=table(schema)),
            (blob, etag, dataset, last_modified),
        )
