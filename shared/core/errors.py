"""What can go wrong, with stable codes a person, an alert and the ledger can key on.

Azure delivers blob events and queue messages at least once and retries a failed function a
fixed number of times. A failure therefore has to say which kind it is:

* **transient** (a connection dropped, a server restarting, a lock timeout, a storage 5xx):
  raise, so that the trigger retries later (``TransientError``, and the storage and PostgreSQL
  errors that ``shared.app.retries`` classifies);
* **permanent** (the file is not CSV, a column is missing, a value PostgreSQL refuses):
  quarantine the input, record the outcome in the ledger and acknowledge, so that nothing
  retries forever (``FileRefused`` and every other ``PipelineError``).
"""

from __future__ import annotations

__all__ = ["FILE_REASONS", "FileRefused", "PipelineError", "TransientError"]

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
    """The whole file is refused: it goes to quarantine with an error report, never retried.

    ``rows_read``: the data rows read before the refusal, when the whole file was read (a
    type drift is found only then); they are all counted as rejected, so that a refused file
    still accounts for every row it has."""

    def __init__(self, code: str, detail: str, *, rows_read: int = 0) -> None:
        super().__init__(code, detail)
        self.rows_read = rows_read


class TransientError(PipelineError):
    """Worth retrying: raised so that the trigger delivers the message again."""
