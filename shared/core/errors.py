"""What can go wrong, with stable codes, and which failures are worth retrying.

Azure delivers blob events and queue messages at least once and retries a failed function a
fixed number of times. A failure therefore has to say which kind it is:

* **transient** (a connection dropped, a server restarting, a lock timeout, a storage 5xx):
  raise, so that the trigger retries later;
* **permanent** (the file is not CSV, a column is missing, a value PostgreSQL refuses):
  quarantine the input, record the outcome in the ledger and acknowledge, so that nothing
  retries forever.
"""

from __future__ import annotations

# Whole-file refusals. Stable: the ledger, reports and alerts key on them.
FILE_REASONS = {
    "empty_file": "the file is empty",
    "not_csv": "the file is not CSV text",
    "undecodable": "the bytes are not valid in the file's encoding",
    "missing_columns": "required columns are missing from the header",
    "unexpected_columns": "the header has columns the contract does not allow",
    "type_drift": "a column's values no longer parse as the contract's type",
    "unknown_dataset": "the blob is not under the folder of a known dataset",
    "unsupported_file": "the blob's name does not end in .csv or .csv.gz",
    "rejected_by_database": "PostgreSQL refused the data",
}


class PipelineError(Exception):
    """An error with a stable code and a detail a person can act on."""

    code = "pipeline_error"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class FileRefused(PipelineError):
    """The whole file is refused: it goes to quarantine with an error report, never retried."""


class TransientError(PipelineError):
    """Worth retrying: raised so that the trigger delivers the message again."""


# SQLSTATE classes and codes worth a retry: connection exceptions, serialization failures,
# deadlocks, admin shutdown and restarts, too many connections, out of resources.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P")
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57014"}
# Data and integrity errors: retrying the same bytes cannot succeed.
_PERMANENT_SQLSTATE_PREFIXES = ("22", "23")


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same work later may succeed."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, PipelineError):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        if sqlstate.startswith(_PERMANENT_SQLSTATE_PREFIXES):
            return False
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    try:
        import psycopg

        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return True  # connection lost or refused: no SQLSTATE reached us
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    try:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return True
        if isinstance(exc, HttpResponseError):
            status = exc.status_code or 0
            return status >= 500 or status in (408, 429)
    except ImportError:  # pragma: no cover - azure-core is a dependency
        pass
    return isinstance(exc, TimeoutError | ConnectionError)


def is_permanent_database_error(exc: BaseException) -> bool:
    """Data and integrity errors, from the server (SQLSTATE 22, 23) or psycopg's own checks."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate:
        return sqlstate.startswith(_PERMANENT_SQLSTATE_PREFIXES)
    import psycopg

    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError)
