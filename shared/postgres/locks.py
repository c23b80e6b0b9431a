"""Transaction-scoped advisory locks: who may work on what at the same time.

Every lock here is taken with ``pg_advisory_xact_lock`` and released at commit or rollback. A
session lock would survive a failed invocation on a cached connection, and behind PgBouncer in
transaction mode (Azure's built-in PgBouncer) it would leak to other clients.

    source    one load (or forget) of a source blob at a time
    DDL       one loader creating or altering a contract's tables and views at a time
    ledger    one creator of the ledger table at a time
    nightly   one nightly re-drive at a time: the second one takes nothing and stops
"""

from __future__ import annotations

from psycopg import Connection

__all__ = ["DDL", "LEDGER", "NIGHTLY", "lock", "lock_source", "try_lock"]

DDL = 0x5049_5045_4C49_4E45  # "PIPELINE"
LEDGER = 0x4C45_4447_4552  # "LEDGER"
NIGHTLY = 0x5245_5052_4F43  # "REPROC"


def lock(conn: Connection, key: int) -> None:
    """Wait for ``key``, held until the end of the caller's transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


def try_lock(conn: Connection, key: int) -> bool:
    """Take ``key`` if nobody holds it, without waiting."""
    row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])


def lock_source(conn: Connection, dataset: str, blob: str) -> None:
    """Serialise loads of one source blob (its key is a 64-bit hash of dataset and name)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{dataset}/{blob}",))
