"""A throwaway PostgreSQL database on the server at ``POSTGRES_DSN``, created and dropped by the benchmark.

Only the server of the DSN matters: the database is created from the ``postgres`` maintenance database."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


def base_dsn() -> str:
    return os.environ.get("POSTGRES_DSN") or DEFAULT_DSN


@contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """Create an empty database, yield its DSN, drop it (even when the benchmark fails)."""
    import psycopg
    from psycopg import sql

    base = base_dsn()
    admin_dsn = psycopg.conninfo.make_conninfo(base, dbname="postgres")  # the DSN's own database may not exist yet
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"PostgreSQL is not reachable at {base!r} (set POSTGRES_DSN): {exc}") from None
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(base, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
