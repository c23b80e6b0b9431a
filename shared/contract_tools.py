"""Contract tooling on the command line: draft a contract from a sample, dry-run a file against one."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the CLI."""
