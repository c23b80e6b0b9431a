"""The contracts the app runs with: every ``*.toml`` in the folder ``PIPELINE_CONTRACTS_DIR`` names.

One place that turns the setting into contracts, for the triggers, the runner and every command.
"""

from __future__ import annotations

from shared.app import settings
from shared.core.contract import Contract, load_contracts

__all__ = ["load"]


def load() -> dict[str, Contract]:
    """Every contract of the configured folder, keyed by dataset (``ContractError`` if one is broken)."""
    return load_contracts(settings.contracts_dir())
