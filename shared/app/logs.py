"""Structured logs: one JSON object per line, with the run's context and no secrets.

Every record carries what an operator filters on (``run_id``, ``dataset``, ``source_blob``,
``status``, ``timings``) when the code passes it as ``extra``. Passwords in DSNs and URLs are
redacted from every message, whoever logs it.

The level is INFO by default, in the Function App and locally: an INFO record is one line per
file ingested, loaded or refused and one per nightly run, which is what an operator reads; a
quieter default left the JSON lines empty. Locally ``PIPELINE_LOG_LEVEL`` (DEBUG, INFO, WARNING,
ERROR) and ``PIPELINE_LOG_FORMAT=json`` change them; in Azure, host.json's ``logging.logLevel``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

from shared.core.redaction import printable, redact

CONTEXT_FIELDS = (
    "run_id", "dataset", "source_blob", "status", "timings", "seconds", "error_code",
    "dequeue_count", "summary", "rows",
)  # fmt: skip


class TextFormatter(logging.Formatter):
    """Plain lines, one per record: a message's control characters and line ends (a blob name
    can hold them) are shown escaped, so that no name forges a log line; tracebacks stay as
    they are, after it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                doc[name] = getattr(record, name)
        if record.exc_info:
            doc["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, default=str)


class RedactingFilter(logging.Filter):
    """For handlers we do not own (the Functions worker's): redact the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


DEFAULT_LEVEL = "INFO"


def json_format() -> bool:
    """``PIPELINE_LOG_FORMAT=json``: the local tools log, and report their progress, as JSON lines."""
    return os.environ.get("PIPELINE_LOG_FORMAT", "text").strip().lower() == "json"


def configure(level: str | None = None, json_lines: bool | None = None) -> None:
    """Log as JSON lines to stderr (``PIPELINE_LOG_FORMAT=json``) or as plain text, at
    ``PIPELINE_LOG_LEVEL`` (INFO by default)."""
    level = level or os.environ.get("PIPELINE_LOG_LEVEL") or DEFAULT_LEVEL
    if json_lines is None:
        json_lines = json_format()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger("pipeline")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def protect() -> None:
    """Inside the Functions worker, whose handlers we do not own: redact every record as it is
    created (a record factory applies to all loggers, including the SDKs' own)."""
    old = logging.getLogRecordFactory()
    if getattr(old, "redacting", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = old(*args, **kwargs)  # type: ignore[arg-type]
        RedactingFilter().filter(record)
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    logger = logging.getLogger("pipeline")
    if logger.level == logging.NOTSET:
        logger.setLevel(DEFAULT_LEVEL)
