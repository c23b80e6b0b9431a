"""Which PostgreSQL failures are worth a retry, and which mean the data itself was refused.

By SQLSTATE: connection exceptions (08), insufficient resources (53), operator intervention
such as a shutdown or restart (57P), serialization failures and deadlocks (40001, 40P01), a
lock not available (55P03) and a cancelled statement (57014) pass with time; data exceptions
(22) and integrity violations (23) are about the bytes, and retrying the same bytes cannot
succeed. A connection refused before any SQLSTATE is transient too.
"""

from __future__ import annotations

__all__ = ["is_permanent_database_error", "is_transient_database_error"]

_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P")
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57014"}
_PERMANENT_SQLSTATE_PREFIXES = ("22", "23")


def is_transient_database_error(exc: BaseException) -> bool:
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        if sqlstate.startswith(_PERMANENT_SQLSTATE_PREFIXES):
            return False
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    import psycopg

    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)  # no SQLSTATE reached us


def is_permanent_database_error(exc: BaseException) -> bool:
    """Data and integrity errors, from the server (SQLSTATE 22, 23) or psycopg's own checks."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate:
        return sqlstate.startswith(_PERMANENT_SQLSTATE_PREFIXES)
    import psycopg

    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError)
