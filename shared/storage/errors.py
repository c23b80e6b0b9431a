"""Which failures of Azure Storage are worth a retry: it could not be reached, or it said so."""

from __future__ import annotations

__all__ = ["is_transient_storage_error"]


def is_transient_storage_error(exc: BaseException) -> bool:
    """No answer (connection refused, reset, timed out), a 5xx, a timeout (408) or throttling (429)."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return True
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        return status >= 500 or status in (408, 429)
    return False
