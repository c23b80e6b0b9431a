"""Expected failures of the command line: one line for a person, and an exit code per kind.

A command that cannot do what it was asked, for a reason the person can fix (a typo, a broken
contract, Azurite not running, a wrong DSN), ends with one line on stderr that names what is
wrong and what to do, and an exit code that a script can tell apart. Anything else is a bug and
keeps its traceback: ``explain`` returns ``None`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.core.redaction import redact

__all__ = ["EXIT_CODES", "CommandError", "explain", "one_line"]

OK, NEEDS_A_PERSON, USAGE, CONTRACT, STORAGE, DATABASE = 0, 1, 2, 3, 4, 5
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for any tool whose reader went away

EXIT_CODES = {
    OK: "done",
    NEEDS_A_PERSON: "done, and something needs a person (status, check --fail-on-rejects, a refused file, a failed backfill)",
    USAGE: "bad arguments: an unknown option, blob, dataset or message id; a local file missing or not .csv/.csv.gz",
    CONTRACT: "a contract cannot be used (the line names its file and line)",
    STORAGE: "storage unreachable or refusing (Azurite not running, a wrong DataStorage, no such container)",
    DATABASE: "PostgreSQL unreachable or refusing (not running, a wrong POSTGRES_DSN, a password refused)",
    INTERRUPTED: "interrupted (Ctrl-C)",
    BROKEN_PIPE: "the reader of the output went away (| head): the output was cut, so no verdict is claimed",
}
"""The exit codes, as ``--help`` and the README list them."""

STORAGE_HINT = "is Azurite running (scripts/demo starts it)? check the DataStorage setting"
DATABASE_HINT = "is PostgreSQL running? check POSTGRES_DSN (or POSTGRES_HOST, POSTGRES_DSN_SECRET_URI)"


@dataclass
class CommandError(Exception):
    """A failure the command expected: ``message`` says what is wrong and what to do."""

    message: str
    code: int = USAGE

    def __str__(self) -> str:
        return self.message


def one_line(text: object) -> str:
    """Any message on one line, with passwords redacted (psycopg's span several lines)."""
    return redact(" ".join(str(text).split()))


def explain(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and line of an expected failure; ``None`` for a bug (keep its traceback)."""
    if isinstance(exc, CommandError):
        return exc.code, exc.message
    from shared.core.contract import ContractError

    if isinstance(exc, ContractError):
        return CONTRACT, f"contract error: {one_line(exc)}"
    return _storage(exc) or _database(exc)


def _storage(exc: BaseException) -> tuple[int, str] | None:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return STORAGE, f"storage unreachable: {one_line(exc)}; {STORAGE_HINT}"
    if isinstance(exc, ClientAuthenticationError):
        return STORAGE, f"storage refused the credentials: {_first_line(exc)}; check the DataStorage setting and its role"
    if isinstance(exc, HttpResponseError):
        what = exc.error_code or exc.status_code
        return STORAGE, f"storage answered {what}: {_first_line(exc)}"
    return None


def _database(exc: BaseException) -> tuple[int, str] | None:
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        return DATABASE, f"database unreachable or refusing: {one_line(exc)}; {DATABASE_HINT}"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return DATABASE, f"database refused: {one_line(exc)}; the role of POSTGRES_DSN needs more rights"
    return None


def _first_line(exc: BaseException) -> str:
    """The SDK's storage errors carry the service's XML after the first line: keep the sentence."""
    text = str(getattr(exc, "message", None) or exc)
    return one_line(text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
