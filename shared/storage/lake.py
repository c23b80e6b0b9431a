"""The lake's Delta tables through delta-rs (``deltalake``): connection options, commits, upkeep.

delta-rs talks to Blob Storage through Rust's ``object_store``, not the Python SDK, so the data
connection's settings are translated here into its options (``storage_options``): the same
connection string (Azurite, a key) or the same identity-based family the bindings use, with the
user-assigned managed identity's client id and the Functions host's identity endpoint.

Commits (``publish``, ``remove``) replace one source's partition in one transaction that carries
an application transaction (``txn``: the source key and the run's number), so that a commit
retried after a crash is recognised and commits nothing. delta-rs resolves a race for the next
log version itself (Blob Storage's create-if-absent is the commit's atomic step) and checks
that what the winner committed does not touch this partition; ``Counts`` says how often that
happened. ``maintain`` compacts, checkpoints and vacuums. ``deltalake`` is imported inside the
functions: it is large, and only publishing needs it (cold start).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from shared.core.lake import PARTITION, StagedTable
from shared.core.layout import CURATED
from shared.storage.accounts import DATA_CONNECTION

__all__ = [
    "Counts", "LakeSchemaChanged", "history", "maintain", "partitions", "publish", "remove", "storage_options", "table_uri",
]  # fmt: skip

EMULATOR_ACCOUNT = "devstoreaccount1"
MAX_COMMIT_RETRIES = 15
"""Races for a log version that delta-rs resolves by itself before it gives up."""
ATTEMPTS = 20
"""Times this module starts a commit again after delta-rs gave up (each reads the new log)."""
CHECKPOINT_INTERVAL = "delta.checkpointInterval"
"""A checkpoint every 10 commits (delta-rs's default is 100): a writer or reader that opens the
table reads the last checkpoint and at most 9 commits after it, not up to 99."""


class LakeSchemaChanged(Exception):
    """A run's files have a column whose type differs from the table's: a new contract changed
    a type. Delta cannot widen it in place; docs/lake.md says how to rebuild the table."""


@dataclass
class Counts:
    """What committing cost: concurrent commits checked for a conflict (none found, or it would
    be a conflict), retries after delta-rs ran out of its own, and real conflicts."""

    commits: int = 0
    races: int = 0
    retries: int = 0
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)
    run_id: str = ""  # the run the commits published, when the caller says

    def add(self, other: Counts) -> None:
        self.commits += other.commits
        self.races += other.races
        self.retries += other.retries
        self.conflicts += other.conflicts
        self.errors += other.errors[-5:]

    def as_dict(self) -> dict[str, int]:
        return {"commits": self.commits, "races": self.races, "retries": self.retries, "conflicts": self.conflicts}


# --- connection ---------------------------------------------------------------------------------


def _parse_connection_string(text: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in text.split(";") if "=" in part)
    return {k.strip().lower(): v.strip() for k, v in pairs}


def storage_options(connection: str = DATA_CONNECTION, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``object_store`` options for the account behind a connection setting, as the host reads it.

    * ``UseDevelopmentStorage=true``: Azurite on its default port (``use_emulator``);
    * a connection string: its account, key (or SAS) and blob endpoint (Azurite on other ports);
    * identity-based (``__blobServiceUri``): the account from the URI; with
      ``__credential=managedidentity`` the managed identity, user-assigned when ``__clientId``
      is set, through the endpoint the Functions host gives the process (``IDENTITY_ENDPOINT``,
      with ``IDENTITY_HEADER``, which object_store reads itself; Azure's VM endpoint otherwise)."""
    env = os.environ if env is None else env
    text = env.get(connection) or ""
    if text:
        return _from_connection_string(text)
    uri = env.get(f"{connection}__blobServiceUri") or env.get(f"{connection}__serviceUri")
    if not uri:
        raise RuntimeError(f"app setting {connection} (or {connection}__blobServiceUri) is not set")
    parsed = urlparse(uri)
    options = {"account_name": (parsed.hostname or "").split(".", 1)[0], "azure_endpoint": uri.rstrip("/")}
    if parsed.scheme == "http":
        options["allow_http"] = "true"
    if env.get(f"{connection}__credential") == "managedidentity":
        if env.get(f"{connection}__clientId"):
            options["azure_client_id"] = env[f"{connection}__clientId"]
        if env.get("IDENTITY_ENDPOINT"):
            options["azure_msi_endpoint"] = env["IDENTITY_ENDPOINT"]
    else:  # like the SDK's DefaultAzureCredential on a developer's machine: ``az login``
        options["azure_use_azure_cli"] = "true"
    return options


def _from_connection_string(text: str) -> dict[str, str]:
    fields = _parse_connection_string(text)
    if fields.get("usedevelopmentstorage", "").lower() == "true":
        return {"use_emulator": "true", "account_name": EMULATOR_ACCOUNT, "allow_http": "true"}
    options = {"account_name": fields.get("accountname", "")}
    if fields.get("accountkey"):
        options["account_key"] = fields["accountkey"]
    if fields.get("sharedaccesssignature"):
        options["sas_key"] = fields["sharedaccesssignature"]
    endpoint = fields.get("blobendpoint")
    if not endpoint and fields.get("endpointsuffix"):
        endpoint = (
            f"{fields.get('defaultendpointsprotocol', 'https')}://{options['account_name']}.blob.{fields['endpointsuffix']}"
        )
    if endpoint:
        options["azure_endpoint"] = endpoint.rstrip("/")
        if endpoint.startswith("http://"):
            options["allow_http"] = "true"
    return options


def table_uri(path: str) -> str:
    """The URI delta-rs opens a table at: ``az://curated/<dataset>/tables/<table>``."""
    return f"az://{CURATED}/{path}"


# --- commits -----------------------------------------------------------------------------------


def _open(uri: str, options: dict[str, str]) -> Any:
    """The table as it is now, or None. Opened afresh each time (the last checkpoint and at most
    nine commits after it): a table kept open across invocations would not notice that its
    folder was deleted and rebuilt."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        return None


def _open_or_create(uri: str, options: dict[str, str], schema: Any, name: str, configuration: dict[str, str]) -> Any:
    """The table, created (empty) by whichever writer gets there first."""
    from deltalake import DeltaTable

    table = _open(uri, options)
    if table is not None:
        return table
    try:
        DeltaTable.create(
            uri, schema, partition_by=[PARTITION], name=name, mode="error", storage_options=options,
            configuration={CHECKPOINT_INTERVAL: "10", **configuration},
        )  # fmt: skip
    except Exception:  # noqa: BLE001 - another writer created it first: open what it made
        pass
    table = _open(uri, options)
    if table is None:
        raise RuntimeError(f"{uri} could not be created")
    return table


def _widen(table: Any, schema: Any, metadata: dict[str, Any]) -> None:
    """Add to the table the columns a run's files bring (a contract that gained a column, or
    columns kept under ``extra_columns = "keep"``); refuse a changed type."""
    from deltalake import CommitProperties

    have = {f.name: f for f in table.schema().fields}
    new = []
    for f in schema.fields:
        if f.name not in have:
            new.append(f)
        elif str(have[f.name].type) != str(f.type):
            raise LakeSchemaChanged(f"column {f.name!r} is {have[f.name].type} in the table and {f.type} in the run's files")
    if new:
        widen = CommitProperties(custom_metadata={**metadata, "pipeline.operation": "widen"})
        table.alter.add_columns(new, commit_properties=widen)


def _commit(
    uri: str, options: dict[str, str], staged: StagedTable | None, *, source_key: str, version: int, metadata: dict[str, Any],
    name: str, configuration: dict[str, str],
) -> tuple[int | None, Counts]:  # fmt: skip
    """Make the partition of ``source_key`` hold exactly ``staged``'s files (none: empty), in one
    commit carrying ``txn(source_key, version)``; None when that commit is already there."""
    from deltalake import CommitProperties, Schema, Transaction
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction

    counts = Counts()
    now = int(time.time() * 1000)
    files = staged["files"] if staged else []
    adds = [AddAction(f["path"], f["size"], {PARTITION: source_key}, now, True, f["stats"]) for f in files]
    for _ in range(ATTEMPTS):
        if staged is not None:
            schema = Schema.from_json(json.dumps(staged["schema"]))
            table = _open_or_create(uri, options, schema, name, configuration)
            _widen(table, schema, metadata)
        else:
            table = _open(uri, options)
            if table is None:
                return None, counts
        if table.transaction_version(source_key) == version:
            return None, counts
        read = table.version()
        properties = CommitProperties(
            custom_metadata=metadata, max_commit_retries=MAX_COMMIT_RETRIES, app_transactions=[Transaction(source_key, version)]
        )
        try:
            table.create_write_transaction(
                adds, mode="overwrite", schema=table.schema(), partition_by=[PARTITION],
                partition_filters=[(PARTITION, "=", source_key)], commit_properties=properties,
            )  # fmt: skip
        except CommitFailedError as exc:
            counts.retries += 1
            if "Failed to commit transaction" not in str(exc):  # not out of retries: a real conflict
                counts.conflicts += 1
            counts.errors.append(str(exc)[:300])
            continue
        committed = _committed_version(table, read, source_key, metadata)
        counts.commits += 1
        counts.races += max(0, committed - read - 1)
        return committed, counts
    raise RuntimeError(f"could not commit to {uri} after {ATTEMPTS} attempts: {counts.errors[-1:]}")


def _committed_version(table: Any, read: int, source_key: str, metadata: dict[str, Any]) -> int:
    """The version this writer's commit got: delta-rs does not say, and others may have
    committed before and after it. The newest commit that carries this source and run."""
    table.update_incremental()
    latest = table.version()
    if latest == read + 1:
        return latest  # nobody committed after this writer's snapshot but this writer
    run = metadata.get("pipeline.run_id")
    for entry in table.history(max(1, latest - read)):
        if entry.get("pipeline.source_key") == source_key and entry.get("pipeline.run_id") == run:
            return int(entry["version"])
    return latest


def publish(
    uri: str, options: dict[str, str], staged: StagedTable, *, source_key: str, version: int, metadata: dict[str, Any],
    name: str, configuration: dict[str, str] | None = None,
) -> tuple[int | None, Counts]:  # fmt: skip
    """Replace a source's rows with a run's staged files in one commit (the table is created
    on the first). Returns the commit's version, or None if this run's commit is already in."""
    return _commit(
        uri, options, staged, source_key=source_key, version=version, metadata=metadata, name=name,
        configuration=configuration or {},
    )  # fmt: skip


def remove(
    uri: str, options: dict[str, str], *, source_key: str, version: int, metadata: dict[str, Any]
) -> tuple[int | None, Counts]:
    """Remove a source's rows in one commit (its files stay readable by time travel until the
    vacuum). None when the table does not exist or the removal is already committed."""
    return _commit(uri, options, None, source_key=source_key, version=version, metadata=metadata, name="", configuration={})


# --- upkeep -------------------------------------------------------------------------------------


def maintain(uri: str, options: dict[str, str], *, retention_hours: int, metadata: dict[str, Any]) -> dict[str, Any] | None:
    """Compact small files (per partition), write a checkpoint, vacuum files removed more than
    ``retention_hours`` ago, drop expired log entries. None if the table does not exist."""
    from deltalake import CommitProperties

    table = _open(uri, options)
    if table is None:
        return None
    retention = f"interval {retention_hours} hours"
    if table.metadata().configuration.get("delta.deletedFileRetentionDuration") != retention:
        table.alter.set_table_properties(
            {"delta.deletedFileRetentionDuration": retention},
            commit_properties=CommitProperties(custom_metadata={**metadata, "pipeline.operation": "retention"}),
        )
    compacted = table.optimize.compact(commit_properties=CommitProperties(custom_metadata=metadata))
    table.create_checkpoint()
    vacuumed = table.vacuum(
        retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False,
        commit_properties=CommitProperties(custom_metadata=metadata),
    )  # fmt: skip
    table.cleanup_metadata()
    return {
        "version": table.version(),
        "files_compacted": int(compacted.get("numFilesRemoved", 0)),
        "files_written": int(compacted.get("numFilesAdded", 0)),
        "files_vacuumed": len(vacuumed),
    }


def partitions(uri: str, options: dict[str, str], keys: Mapping[str, Any] | set[str] = frozenset()) -> dict[str, Any] | None:
    """Source key -> the ``txn`` version its partition was last committed with, for every
    partition that holds files and every key asked about (None: never committed). None when
    the table does not exist."""
    import polars as pl

    table = _open(uri, options)
    if table is None:
        return None
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    column = f"partition.{PARTITION}"
    present = set(actions[column].to_list()) if column in actions.columns else set()
    return {k: table.transaction_version(k) for k in present | set(keys)}


def history(uri: str, options: dict[str, str], limit: int | None = None) -> list[dict[str, Any]]:
    """The table's commits, newest first, with the pipeline's commit metadata (run id etc.)."""
    table = _open(uri, options)
    return [] if table is None else table.history(limit)
