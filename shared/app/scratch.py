"""Scratch folders on the instance's local disk, and the sweep of those a killed run left behind.

An invocation works in a folder of its own (``ingest-…``, ``load-…``) and removes it when it
ends, whatever the outcome. An instance that is killed (out of memory, a deployment, the
function timeout) cannot: its folders stay, and on a long-lived instance they add up until the
disk is full. So the first scratch folder a process makes sweeps the folders older than the
function timeout (no invocation can still be using them: the host has ended it by then).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from functools import cache
from pathlib import Path

from shared.app import settings

__all__ = ["PREFIXES", "new_folder", "sweep"]

log = logging.getLogger("pipeline.scratch")

PREFIXES = ("ingest-", "load-")


def new_folder(prefix: str, work_dir: Path | None = None) -> Path:
    """A fresh folder under the work folder (the system's temp by default)."""
    parent = work_dir or settings.work_dir() or Path(tempfile.gettempdir())
    _swept_once(str(parent))
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


@cache
def _swept_once(parent: str) -> None:
    sweep(Path(parent), older_than=settings.function_timeout_seconds())


def sweep(parent: Path, *, older_than: float, now: float | None = None) -> list[str]:
    """Remove this pipeline's scratch folders under ``parent`` untouched for ``older_than``
    seconds; return their names."""
    now = time.time() if now is None else now
    removed = []
    try:
        candidates = [p for p in parent.iterdir() if p.is_dir() and p.name.startswith(PREFIXES)]
    except OSError:
        return removed
    for folder in candidates:
        try:
            if now - folder.stat().st_mtime > older_than:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        except OSError:
            continue  # removed meanwhile by its own run
    if removed:
        log.info("removed %d scratch folder(s) left by killed runs under %s", len(removed), parent)
    return removed
