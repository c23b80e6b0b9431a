"""The command line's clients for storage and PostgreSQL: built to fail within seconds.

The storage SDK's default policy retries a refused connection for about 80 s (backing off 15,
18, 24 s), which is right for a function that the host would otherwise fail and redeliver, and
wrong for a person at a prompt whose Azurite is not running. The command line's clients retry
twice within a few seconds and give up; the app's own clients are untouched. A setting that is
missing or malformed becomes one line naming the setting, not a traceback.
"""

from __future__ import annotations

from typing import Any

from shared.storage import accounts
from shared.tools.failures import DATABASE, DATABASE_HINT, STORAGE, CommandError, one_line

__all__ = ["QUICK", "RUNNER", "blob_store", "database", "queue_sender", "queue_service"]

QUICK: dict[str, Any] = {
    "retry_total": 2,
    "initial_backoff": 0.5,
    "increment_base": 1,
    "random_jitter_range": 0.2,
    "connection_timeout": 5,
}
"""Storage client options for a command: two retries 1.5 s apart (the storage SDK waits
``initial_backoff + increment_base ** n``), 5 s to connect."""

RUNNER: dict[str, Any] = {**QUICK, "retry_total": 1}
"""The local runner's polling clients: each failed poll returns within seconds, so that the
runner can say, every few seconds, that it is still waiting (it keeps waiting: it is the host)."""


def _built(build: Any, connection: str) -> Any:
    try:
        return build(connection, **QUICK)
    except (RuntimeError, ValueError) as exc:  # the setting is missing, or not a connection string
        raise CommandError(f"storage not configured: {one_line(exc)}", STORAGE) from exc


def blob_service(connection: str = accounts.DATA_CONNECTION) -> Any:
    return _built(accounts.blob_service, connection)


def queue_service(connection: str = accounts.DATA_CONNECTION) -> Any:
    return _built(accounts.queue_service, connection)


def blob_store() -> Any:
    """The data account's blobs, behind the pipeline's ``Store``, quick to fail."""
    from shared.storage.blobs import BlobStore

    return BlobStore(blob_service())


def queue_sender() -> Any:
    """Sends ingest requests as the host expects them (``host.json``'s encoding), quick to fail."""
    from shared.app import settings
    from shared.storage.queues import QueueSender

    return QueueSender(queue_service(), encoding=settings.message_encoding())


def database(*, ensure_ledger: bool = True) -> Any:
    """A PostgreSQL connection (connect timeout 10 s, no retry), with the ledger created."""
    import psycopg

    from shared.app import settings
    from shared.postgres import connections, ledger

    try:
        conn = connections.connect()
    except (RuntimeError, ValueError) as exc:  # no PostgreSQL configured, an Entra setting missing, a bad secret URI
        raise CommandError(f"database not configured: {one_line(exc)}; {DATABASE_HINT}", DATABASE) from exc
    except psycopg.ProgrammingError as exc:  # libpq could not parse the connection string
        raise CommandError(f"POSTGRES_DSN is not a connection string: {one_line(exc)}", DATABASE) from exc
    if ensure_ledger:
        ledger.ensure(conn, settings.ledger_schema())
    return conn
