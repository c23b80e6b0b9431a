"""Secrets out of text that is about to be logged or printed: passwords in DSNs and URLs.

Pure string work, so that every room can use it: the logging of the app, the connection plans
of ``shared.postgres`` and the command line's one-line errors.
"""

from __future__ import annotations

import re

__all__ = ["redact"]


def redact(dsn: str) -> str:
    """A DSN or URL with its password replaced, safe to log."""
    dsn = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn, flags=re.IGNORECASE)
    return re.sub(r"(://[^:/@\s]+:)([^@\s]+)(@)", r"\1***\3", dsn)
