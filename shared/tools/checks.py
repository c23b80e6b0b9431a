"""What commands check before they act, so that a typo is one line and not a silent no-op.

Every command that takes a local file, a dataset or a raw blob name checks it here, the same
way: a local file must be a readable ``.csv`` or ``.csv.gz``, a dataset must have a contract,
and a blob name may be given with or without its ``raw/`` prefix.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.app import settings
from shared.core import layout
from shared.tools.failures import CommandError

__all__ = ["at_least", "dataset_contract", "known_contract", "local_csv", "raw_name"]


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type for a count (workers, rows, a limit): a whole number of at least ``low``,
    so that ``--workers 0`` is argparse's one line instead of a thread pool's ValueError."""

    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected at least {low}, not {value}")
        return value

    count.__name__ = f"at_least_{low}"
    return count


def local_csv(text: str | Path) -> Path:
    """A local file the pipeline would read: it exists, is a readable file, and ends in .csv or
    .csv.gz (anything else would be refused ``unsupported_file`` once it is in raw)."""
    path = Path(text)
    if not path.exists():
        raise CommandError(f"no such file: {text}")
    if not path.is_file():
        raise CommandError(f"{text} is not a file")
    if not os.access(path, os.R_OK):
        raise CommandError(f"cannot read {text}: permission denied")
    if not layout.accepted(path.name):
        raise CommandError(f"{text} is not a .csv or .csv.gz file: the pipeline reads only those (export it as CSV first)")
    return path


def known_contract(dataset: str) -> Any:
    """The contract of a dataset, or one line saying there is none and how to write one."""
    from shared.app import contracts

    found = contracts.load()
    if dataset not in found:
        raise CommandError(
            f"no contract for dataset {dataset!r} in {settings.contracts_dir()} (known: {', '.join(sorted(found)) or 'none'}); "
            f"a file there would be refused unknown_dataset: draft one with "
            f"`python -m shared infer FILE --out contracts/{dataset}.toml`"
        )
    return found[dataset]


def raw_name(text: str) -> str:
    """A raw blob name as every command takes it: ``dataset/file.csv`` or ``raw/dataset/file.csv``."""
    return text.strip().removeprefix(f"{layout.RAW}/").lstrip("/")


def dataset_contract(blob: str) -> Any:
    """The contract of the dataset folder a raw blob is under (one line if there is none)."""
    dataset = layout.dataset_of(blob)
    if dataset is None:
        raise CommandError(f"{blob!r} is not under a dataset folder: raw blob names look like <dataset>/<file>.csv")
    return known_contract(dataset)
