"""The loader's SQL: stage a frame by binary COPY, replace one source's rows, remove them.

    COPY (binary) ─▶ temp staging table  (``stage``; dropped at commit)
    DELETE the source's rows; INSERT from staging  (``replace_rows``: per-file replace)

The caller holds the transaction and the source's lock (``shared.postgres.locks``); the ledger
row that says which run's rows these are is written in the same transaction
(``shared.postgres.ledger``), so the tables and the ledger never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl
from psycopg import Connection, sql

from shared.core.contract import Contract
from shared.postgres import copy_binary, ledger, locks, warehouse

__all__ = ["copy_rows", "copy_type", "remove_source", "replace_rows", "stage"]


_COPY_TYPES = {"double precision": "float8", "bigint": "int8", "boolean": "bool"}


def copy_type(pgtype: str) -> str:
    base = pgtype.split("(", 1)[0].strip()
    return _COPY_TYPES.get(base, base)


def stage(conn: Connection, shape: warehouse.TableShape, df: pl.DataFrame) -> sql.Identifier:
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


def replace_rows(conn: Connection, shape: warehouse.TableShape, stage: sql.Identifier | None, blob: str, run_id: str) -> int:
    """Replace one table's rows of ``blob`` with those staged (none: the source now has none)."""
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


def remove_source(conn: Connection, contract: Contract, blob: str, schema: str) -> dict[str, int]:
    """Remove a source blob's contribution from every table (explicit operator action)."""
    removed = {}
    with conn.transaction():
        locks.lock_source(conn, contract.dataset, blob)
        for name, shape in warehouse.tables(contract):
            cur = conn.execute(
                sql.SQL("DELETE FROM {}.{} WHERE {} = %s").format(
                    sql.Identifier(shape.schema), sql.Identifier(shape.table), sql.Identifier(warehouse.SOURCE_COL)
                ),
                (blob,),
            )
            removed[name] = cur.rowcount
        ledger.mark_removed(conn, schema, blob)
    return removed
