"""Whether a failed invocation should be retried: the one question every trigger asks.

A function that raises is delivered again by the host (up to ``maxDequeueCount``); one that
returns is done. So only what may pass with time is raised: the pipeline's own
``TransientError``, storage or PostgreSQL unreachable or throttled, timeouts. Everything else
that is expected (a refused file, a malformed message, data PostgreSQL refuses) is recorded
and acknowledged by the code that meets it.
"""

from __future__ import annotations

from shared.core.errors import PipelineError, TransientError
from shared.postgres.errors import is_transient_database_error
from shared.storage.errors import is_transient_storage_error

__all__ = ["is_transient"]


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same work later may succeed."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, PipelineError):
        return False
    if getattr(exc, "sqlstate", None):
        return is_transient_database_error(exc)
    return is_transient_database_error(exc) or is_transient_storage_error(exc) or isinstance(exc, TimeoutError | ConnectionError)
