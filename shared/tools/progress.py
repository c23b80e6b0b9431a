"""A one-line progress bar on stderr, for commands that move many bytes or files.

On a terminal it redraws one line at most ten times a second; anywhere else (CI, a pipe) it
prints one plain line when it closes, so logs stay readable.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, label: str, total: int | None = None, unit: str = "") -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.started = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self.last > 0.1:
            self.last = now
            if self.total:
                share = self.done / self.total
                bar = "#" * int(30 * share)
                sys.stderr.write(f"\r{self.label} [{bar:<30}] {share:6.1%} {self._fmt(self.done)}/{self._fmt(self.total)}")
            else:
                sys.stderr.write(f"\r{self.label} {self._fmt(self.done)}")
            sys.stderr.flush()

    def close(self) -> None:
        took = time.monotonic() - self.started
        end = f"{self.label} {self._fmt(self.done)} in {took:.1f} s"
        sys.stderr.write(("\r" + end + " " * 20 + "\n") if self.tty else end + "\n")

    def _fmt(self, n: int) -> str:
        if self.unit == "B":
            return f"{n / 1e6:,.1f} MB"
        return f"{n:,}{self.unit}"
