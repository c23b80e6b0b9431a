"""The PostgreSQL edge: connections, the ledger, the tables and views a contract needs, the loader's SQL.

    connections   a DSN, a Key Vault secret or a Microsoft Entra token; one cached connection per thread
    ledger        one row per source blob version: every statement on the ledger table is here
    warehouse     the tables, indexes and views derived from a contract (idempotent DDL)
    replace       stage by binary COPY, replace one source's rows, remove them
    copy_binary   PostgreSQL's binary COPY format for a whole polars frame at once
    locks         the advisory locks that keep concurrent loads and nightly runs apart
    errors        which database failures are worth a retry

Depends on ``shared.core`` only; knows nothing of Azure Storage or of the Function App.
Identifiers always go through ``psycopg.sql.Identifier``.
"""
