"""PostgreSQL objects derived from a contract: per-file tables and the views the ML app reads.

Each aggregate gets a table holding every loaded file's partial aggregates, tagged with the
source blob, and a view that merges them into one row per key:

    analytics.bank_transactions_daily_by_file   (keys, partial metrics, _source_blob, _run_id)
    analytics.bank_transactions_daily            view: keys, merged metrics

Per-file rows make "replace one file's contribution" a DELETE of that file's rows, and make
sums add up across files. A mean is stored as sum and count; a distinct count keeps the
distinct values per file in a side table, so that merging stays exact. All DDL is idempotent
and every identifier goes through ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from psycopg import Connection, errors, sql

from shared.core.contract import Aggregate, Contract, GroupKey, Metric

SOURCE_COL = "_source_blob"
RUN_COL = "_run_id"
LOADED_COL = "_loaded_at"

_PG_TYPES = {
    "string": "text",
    "integer": "bigint",
    "float": "double precision",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamptz",
}


def column_type(contract: Contract, column: str) -> str:
    col = contract.column(column)
    if col.type == "decimal":
        return f"numeric(38,{col.scale})"
    return _PG_TYPES[col.type]


def key_type(contract: Contract, key: GroupKey) -> str:
    if key.bucket is None:
        return column_type(contract, key.column)
    return "timestamptz" if key.bucket == "hour" else "date"


def _sum_type(contract: Contract, column: str) -> str:
    col = contract.column(column)
    return {"integer": "numeric(38,0)", "decimal": f"numeric(38,{col.scale})"}.get(col.type, "double precision")


def metric_columns(contract: Contract, m: Metric) -> list[tuple[str, str]]:
    """The per-file columns a metric is stored as, with their PostgreSQL types."""
    if m.op == "count":
        return [(m.name, "bigint")]
    assert m.column is not None
    if m.op == "sum":
        return [(m.name, _sum_type(contract, m.column))]
    if m.op in ("min", "max"):
        return [(m.name, column_type(contract, m.column))]
    if m.op == "mean":
        return [(f"{m.name}__sum", _sum_type(contract, m.column)), (f"{m.name}__count", "bigint")]
    if m.op == "count_distinct":
        return []  # lives in the side table
    raise ValueError(m.op)


@dataclass(frozen=True)
class TableShape:
    """One table the loader copies a Parquet file into."""

    schema: str
    table: str
    columns: list[tuple[str, str]]  # data columns (name, pg type), without the lineage columns
    key: list[str]


def aggregate_table(contract: Contract, agg: Aggregate) -> TableShape:
    cols = [(k.name, key_type(contract, k)) for k in agg.keys]
    for m in agg.metrics:
        cols.extend(metric_columns(contract, m))
    return TableShape(contract.schema, agg.table, cols, [k.name for k in agg.keys])


def distinct_table(contract: Contract, agg: Aggregate, m: Metric) -> TableShape:
    assert m.column is not None
    cols = [(k.name, key_type(contract, k)) for k in agg.keys] + [("value", column_type(contract, m.column))]
    return TableShape(contract.schema, f"{agg.table}__{m.name}"[:63], cols, [k.name for k in agg.keys] + ["value"])


def tables(contract: Contract) -> list[tuple[str, TableShape]]:
    """Every table of a contract, named as the manifest names its Parquet outputs."""
    out = []
    for agg in contract.aggregates:
        out.append((f"aggregate:{agg.name}", aggregate_table(contract, agg)))
        for m in agg.metrics:
            if m.op == "count_distinct":
                out.append((f"distinct:{agg.name}__{m.name}", distinct_table(contract, agg, m)))
    return out


def _create_table(shape: TableShape) -> sql.Composed:
    cols = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in shape.columns]
    cols += [
        sql.SQL("{} text NOT NULL").format(sql.Identifier(SOURCE_COL)),
        sql.SQL("{} text NOT NULL").format(sql.Identifier(RUN_COL)),
        sql.SQL("{} timestamptz NOT NULL DEFAULT now()").format(sql.Identifier(LOADED_COL)),
    ]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({})").format(
        sql.Identifier(shape.schema), sql.Identifier(shape.table), sql.SQL(", ").join(cols)
    )


def _merge(m: Metric) -> list[sql.Composable]:
    """How a view merges one metric across files."""
    name = sql.Identifier(m.name)
    if m.op in ("sum", "count"):
        return [sql.SQL("sum(t.{}) AS {}").format(name, name)]
    if m.op in ("min", "max"):
        return [sql.SQL(m.op + "(t.{}) AS {}").format(name, name)]
    if m.op == "mean":
        s, c = sql.Identifier(f"{m.name}__sum"), sql.Identifier(f"{m.name}__count")
        return [sql.SQL("(sum(t.{})::double precision / NULLIF(sum(t.{}), 0)) AS {}").format(s, c, name)]
    return []


def _view(contract: Contract, agg: Aggregate, *, replace: bool = False) -> sql.Composed:
    shape = aggregate_table(contract, agg)
    keys = [sql.Identifier(k) for k in shape.key]
    select: list[sql.Composable] = [sql.SQL("t.{}").format(k) for k in keys]
    for m in agg.metrics:
        select.extend(_merge(m))
    joins: list[sql.Composable] = []
    for m in agg.metrics:
        if m.op != "count_distinct":
            continue
        side = distinct_table(contract, agg, m)
        alias = sql.Identifier(f"d_{m.name}")
        select.append(sql.SQL("max({}.n) AS {}").format(alias, sql.Identifier(m.name)))
        on = sql.SQL(" AND ").join(sql.SQL("{}.{} IS NOT DISTINCT FROM t.{}").format(alias, k, k) for k in keys)
        joins.append(
            sql.SQL(" LEFT JOIN (SELECT {keys}, count(DISTINCT value) AS n FROM {s}.{t} GROUP BY {keys}) {a} ON {on}").format(
                keys=sql.SQL(", ").join(keys), s=sql.Identifier(side.schema), t=sql.Identifier(side.table), a=alias, on=on
            )
        )
    verb = "CREATE OR REPLACE VIEW" if replace else "CREATE VIEW"
    return sql.SQL(verb + " {}.{} AS SELECT {} FROM {}.{} t{} GROUP BY {}").format(
        sql.Identifier(contract.schema),
        sql.Identifier(agg.view),
        sql.SQL(", ").join(select),
        sql.Identifier(shape.schema),
        sql.Identifier(shape.table),
        sql.Composed(joins),
        sql.SQL(", ").join(sql.SQL("t.{}").format(k) for k in keys),
    )


DDL_LOCK = 0x5049_5045_4C49_4E45  # "PIPELINE": serialises DDL between concurrent loaders


def statements(contract: Contract) -> list[sql.Composed]:
    """The DDL of a contract, in order."""
    out = [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(contract.schema))]
    for _, shape in tables(contract):
        out.append(_create_table(shape))
        for name, pgtype in shape.columns:  # a contract may gain metrics over time
            out.append(
                sql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {} {}").format(
                    sql.Identifier(shape.schema), sql.Identifier(shape.table), sql.Identifier(name), sql.SQL(pgtype)
                )
            )
        out.append(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} ({})").format(
                sql.Identifier(f"{shape.table}__source"[:63]),
                sql.Identifier(shape.schema),
                sql.Identifier(shape.table),
                sql.Identifier(SOURCE_COL),
            )
        )
    return out


def grants(contract: Contract, role: str | None) -> list[sql.Composed]:
    """Read access to the views for the ML application's role (``PIPELINE_READER_ROLE``)."""
    if not role:
        return []
    out = [sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(contract.schema), sql.Identifier(role))]
    for agg in contract.aggregates:
        out.append(
            sql.SQL("GRANT SELECT ON {}.{} TO {}").format(
                sql.Identifier(contract.schema), sql.Identifier(agg.view), sql.Identifier(role)
            )
        )
    return out


def ensure(conn: Connection, contract: Contract, ledger_schema: str, reader_role: str | None = None) -> None:
    """Create or update the schema, tables, indexes and views of a contract (idempotent).

    Runs in its own transaction under an advisory lock, so that concurrent loaders never race
    on ``CREATE TABLE IF NOT EXISTS`` (which is not safe against itself). The DDL's fingerprint
    is remembered in ``<ledger schema>.warehouse_ddl``, so an unchanged contract costs one
    lookup and views that others built on ours are left alone."""
    ddl = statements(contract)
    views = [(agg, _view(contract, agg)) for agg in contract.aggregates]
    access = grants(contract, reader_role)
    text = ";".join(s.as_string(conn) for s in [*ddl, *access]) + ";".join(v.as_string(conn) for _, v in views)
    fingerprint = hashlib.sha256(text.encode()).hexdigest()
    registry = sql.Identifier(ledger_schema, "warehouse_ddl")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(ledger_schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (dataset text PRIMARY KEY, contract_version int NOT NULL,"
                " fingerprint text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(registry)
        )
        row = conn.execute(
            sql.SQL("SELECT fingerprint FROM {} WHERE dataset = %s").format(registry), (contract.dataset,)
        ).fetchone()
        if row and row[0] == fingerprint:
            return
        for statement in ddl:
            conn.execute(statement)
        for agg, view in views:
            try:
                with conn.transaction():  # a savepoint, so that a failed replace can be undone
                    conn.execute(_view(contract, agg, replace=True))
            except (errors.InvalidTableDefinition, errors.DatatypeMismatch):
                # the view's columns changed: replace is not allowed, so drop and create
                conn.execute(sql.SQL("DROP VIEW {}.{}").format(sql.Identifier(contract.schema), sql.Identifier(agg.view)))
                conn.execute(view)
        for statement in access:
            conn.execute(statement)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (dataset, contract_version, fingerprint) VALUES (%s, %s, %s) ON CONFLICT (dataset)"
                " DO UPDATE SET contract_version = excluded.contract_version, fingerprint = excluded.fingerprint,"
                " applied_at = now()"
            ).format(registry),
            (contract.dataset, contract.version, fingerprint),
        )
