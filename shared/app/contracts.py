"""The contracts the app runs with: every ``*.toml`` of the folder ``PIPELINE_CONTRACTS_DIR`` names.

A feed's contract is added or changed while the app runs (a new file in the folder locally; a
new deployment in Azure, which restarts the instances with the new package). ``Registry`` is a
live mapping of dataset → contract: every lookup first compares the folder's state (the names,
sizes and modification times of its ``*.toml`` files, a few ``stat`` calls) with the state it
last loaded, and reloads when they differ. So the runner, and the Function App on its next
invocation, use a new contract without a restart.

A folder that is missing, holds no contract, or holds a broken one (two contracts for one
dataset included) stops start-up with one ``ContractError`` line. A contract that breaks
*later* does not stop a running app: the last good set stays in use, and the problem is logged
once per change of the folder, as an error, until it is fixed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from shared.app import settings
from shared.core.contract import Contract, ContractError, load_contracts

__all__ = ["Registry", "load"]

log = logging.getLogger("pipeline.contracts")

FolderState = tuple[str, tuple[tuple[str, int, int], ...]] | None


def load(folder: Path | None = None) -> dict[str, Contract]:
    """Every contract of the folder (the configured one by default), keyed by dataset.

    Raises ``ContractError`` with one line for a folder that does not exist or holds no
    contract, and for any broken contract (with its file, line and problem)."""
    folder = folder or settings.contracts_dir()
    if not folder.is_dir():
        raise ContractError(folder, None, "", "no such folder: set PIPELINE_CONTRACTS_DIR to a folder of contract *.toml files")
    contracts = load_contracts(folder)
    if not contracts:
        raise ContractError(folder, None, "", "the contracts folder holds no *.toml contract: every file would be refused")
    return contracts


def folder_state(folder: Path) -> FolderState:
    """What changes when a contract is added, removed or edited (None: no such folder)."""
    try:
        files = sorted(folder.glob("*.toml"))
        return str(folder.resolve()), tuple((p.name, (st := p.stat()).st_mtime_ns, st.st_size) for p in files)
    except OSError:
        return None


class Registry(Mapping[str, Contract]):
    """The contracts of the configured folder as of its last change; loads them once at creation."""

    def __init__(self, folder: Callable[[], Path] = settings.contracts_dir) -> None:
        self._folder = folder
        self._lock = threading.Lock()
        self._state = folder_state(folder())
        self._contracts = load(folder())
        self._failed_state: FolderState = None

    def current(self) -> dict[str, Contract]:
        """The contracts now: reloaded first if the folder changed since the last load."""
        folder = self._folder()
        state = folder_state(folder)
        if state not in (self._state, self._failed_state):
            with self._lock:
                if state != self._state:
                    self._reload(folder, state)
        return self._contracts

    def _reload(self, folder: Path, state: FolderState) -> None:
        try:
            contracts = load(folder)
        except ContractError as exc:
            self._failed_state = state
            log.error("contracts not reloaded, the last good ones stay in use: %s", exc)
            return
        before = self._contracts
        added = sorted(set(contracts) - set(before))
        changed = sorted(d for d in set(contracts) & set(before) if replace(contracts[d], path="") != replace(before[d], path=""))
        removed = sorted(set(before) - set(contracts))
        self._contracts, self._state, self._failed_state = contracts, state, None
        log.info(
            "contracts reloaded from %s: added %s, changed %s, removed %s",
            folder, added or "none", changed or "none", removed or "none",
        )  # fmt: skip

    def __getitem__(self, dataset: str) -> Contract:
        return self.current()[dataset]

    def __iter__(self) -> Iterator[str]:
        return iter(self.current())

    def __len__(self) -> int:
        return len(self.current())
