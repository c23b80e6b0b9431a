"""Secrets out of text that is about to be logged or printed: passwords in DSNs and URLs, and
control characters out of names that a log line or a terminal would otherwise obey.

Pure string work, so that every room can use it: the logging of the app, the connection plans
of ``shared.postgres`` and the command line's one-line errors.

A password is redacted in every form it reaches text in: ``password=...`` (quoted or not), the
user information of a URL (``scheme://user:secret@host``: everything up to the *last* ``@``
of the authority, since a password written with an unencoded ``@`` is still the user's
password), and, for the secrets a connection plan registers, wherever they appear at all: libpq
cuts ``postgresql://u:S3cret@At@PW8@host/db`` at the first ``@`` and then names the host
``At@PW8@host`` in its errors, a fragment that no pattern could tell from a host name.
"""

from __future__ import annotations

import re
import threading

__all__ = ["printable", "redact", "register_secret"]

_KEYWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_USERINFO = re.compile(r"(://[^:/@\s]+:)([^\s/?#]*)(@)")
_QUERY = re.compile(r"([?&]password=)([^&\s#]*)", re.IGNORECASE)
MIN_FRAGMENT = 4
"""Shorter pieces of a secret are not scrubbed on their own: they would blank ordinary words."""

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(secret: str) -> None:
    """Scrub ``secret`` from every later ``redact``: the whole of it, and what a parser may
    have cut it into at an ``@``, ``:`` or ``/``: every piece before and after such a cut (if
    long enough to scrub without blanking ordinary words)."""
    cuts = [m.start() for m in re.finditer(r"[@:/]", secret)]
    pieces = {secret, *(secret[:i] for i in cuts), *(secret[i + 1 :] for i in cuts), *re.split(r"[@:/]", secret)}
    with _lock:
        _secrets.update(p for p in pieces if len(p) >= MIN_FRAGMENT)


def redact(text: str) -> str:
    """``text`` with every password it holds replaced by ``***``, safe to log."""
    text = _KEYWORD.sub(r"\1***", text)
    text = _QUERY.sub(r"\1***", text)
    text = _USERINFO.sub(r"\1***\3", text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(name: str) -> str:
    """A name (a blob's, a file's) as one safe line: control characters, line ends and the
    bidirectional overrides that reorder a terminal line become visible escapes, so that a
    blob named ``x.csv\\nINFO ... loaded`` cannot forge a line of ``status`` or of a log."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), name)
