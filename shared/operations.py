"""Operations on the command line: what ran, what failed, and how to run it again."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the CLI."""
