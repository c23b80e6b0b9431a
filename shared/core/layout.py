"""Where things live in storage: containers, queues, and the names of every output of a run.

Raw blobs are named by whoever drops them; outputs are named by us. A raw name can hold any
Unicode, ``..``, spaces or 1,000 characters, so output names never reuse it verbatim: they use
a *source key*, a readable slug of the name plus a hash of the exact name, which is safe as a
blob name, a file name and a log field, and still unique per source blob.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.core.contract import IDENTIFIER

RAW = "raw"
CURATED = "curated"
QUARANTINE = "quarantine"
CONTAINERS = (RAW, CURATED, QUARANTINE)

LOAD_QUEUE = "load-requests"
INGEST_QUEUE = "ingest-requests"
QUEUES = (LOAD_QUEUE, INGEST_QUEUE)
BLOB_TRIGGER_POISON = "webjobs-blobtrigger-poison"
"""Where the host reports a blob whose trigger failed ``maxDequeueCount`` times."""


def poison_queue(queue: str) -> str:
    """Where the host moves a message of ``queue`` after ``maxDequeueCount`` failed deliveries."""
    return f"{queue}-poison"


POISON_QUEUES = (poison_queue(LOAD_QUEUE), poison_queue(INGEST_QUEUE), BLOB_TRIGGER_POISON)


@dataclass(frozen=True)
class BlobInfo:
    """A blob version. The ETag is kept without quotes: listing and properties disagree on them."""

    container: str
    name: str
    etag: str
    last_modified: datetime
    size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "etag", self.etag.strip('"'))


ACCEPTED_SUFFIXES = (".csv", ".csv.gz")
UNKNOWN_DATASET = "_unknown"


def dataset_of(blob_name: str) -> str | None:
    """The dataset a raw blob belongs to: its first folder, if that is a valid dataset name."""
    if "/" not in blob_name:
        return None
    first = blob_name.split("/", 1)[0]
    return first if IDENTIFIER.match(first) else None


def accepted(blob_name: str) -> bool:
    return blob_name.lower().endswith(ACCEPTED_SUFFIXES)


def source_key(blob_name: str) -> str:
    """A safe, unique, readable key for a raw blob: ``<slug>-<12 hex of sha256(name)>``."""
    digest = hashlib.sha256(blob_name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    tail = blob_name.split("/", 1)[1] if dataset_of(blob_name) else blob_name
    ascii_name = unicodedata.normalize("NFKD", tail).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name).strip("._-")
    slug = re.sub(r"\.{2,}", ".", slug)[:80].strip("._-") or "blob"
    return f"{slug}-{digest}"


def new_run_id(now: datetime | None = None) -> str:
    """Time-ordered and unique: runs of one source sort by when they started."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class RunPaths:
    """Every blob a run of one source may write, as (container, name) pairs."""

    dataset: str
    source_key: str
    run_id: str

    @property
    def clean_prefix(self) -> tuple[str, str]:
        """Where the run's clean rows are written: the source's partition of the lake's clean
        table, which also holds files of its earlier runs until the nightly vacuum."""
        return CURATED, f"{table_path(self.dataset, 'clean')}/{self.partition}/"

    def clean_part(self, i: int) -> tuple[str, str]:
        # The file name starts with the run id, as every output's does.
        return self.lake_file("clean", i)

    @property
    def clean(self) -> tuple[str, str]:
        """The first part of the clean rows (all of them for a file of up to 2M valid rows)."""
        return self.clean_part(0)

    def aggregate(self, name: str) -> tuple[str, str]:
        """Where runs before the lake wrote an aggregate (still pruned; benchmarks stage here)."""
        return CURATED, f"{self.dataset}/aggregates/{name}/{self.source_key}/{self.run_id}.parquet"

    def distinct(self, name: str) -> tuple[str, str]:
        return CURATED, f"{self.dataset}/distinct/{name}/{self.source_key}/{self.run_id}.parquet"

    def lake_file(self, table: str, i: int) -> tuple[str, str]:
        """A Parquet file of this run in a lake table's partition of this source: written by
        ingest, part of the table only once the loader commits it (``shared.core.lake``)."""
        return CURATED, f"{table_path(self.dataset, table)}/{self.partition}/{self.run_id}.part-{i:05d}.parquet"

    @property
    def partition(self) -> str:
        """The source's partition folder in every lake table (Hive style: ``column=value``)."""
        return f"_source_key={self.source_key}"

    @property
    def lake_commit(self) -> tuple[str, str]:
        """The run's staged commit: which files to add to which table, with their statistics."""
        return CURATED, f"{self.dataset}/lake-commits/{self.source_key}/{self.run_id}.json"

    @property
    def report(self) -> tuple[str, str]:
        return CURATED, f"{self.dataset}/reports/{self.source_key}/{self.run_id}.html"

    @property
    def manifest(self) -> tuple[str, str]:
        return CURATED, f"{self.dataset}/manifests/{self.source_key}/{self.run_id}.json"

    @property
    def rejects(self) -> tuple[str, str]:
        return QUARANTINE, f"{self.dataset}/{self.source_key}/{self.run_id}/rejects.parquet"

    @property
    def error_report(self) -> tuple[str, str]:
        return QUARANTINE, f"{self.dataset}/{self.source_key}/{self.run_id}/error.json"

    def quarantined_copy(self, blob_name: str) -> tuple[str, str]:
        leaf = source_key(blob_name.rsplit("/", 1)[-1])
        suffix = ".csv.gz" if blob_name.lower().endswith(".gz") else ".csv" if accepted(blob_name) else ".bin"
        return QUARANTINE, f"{self.dataset}/{self.source_key}/{self.run_id}/{leaf}{suffix}"

    def prefixes(self) -> list[tuple[str, str]]:
        """Prefixes that hold this source's outputs of every run (for pruning old runs)."""
        return [
            (CURATED, f"{self.dataset}/clean/{self.source_key}/"),
            (CURATED, f"{self.dataset}/aggregates/"),
            (CURATED, f"{self.dataset}/distinct/"),
            (CURATED, f"{self.dataset}/reports/{self.source_key}/"),
            (CURATED, f"{self.dataset}/manifests/{self.source_key}/"),
            (CURATED, f"{self.dataset}/lake-commits/{self.source_key}/"),
        ]


TABLES = "tables"
"""The folder of a dataset's Delta tables in curated (``shared.core.lake``)."""


def table_path(dataset: str, table: str) -> str:
    """A lake table's root in the curated container: ``<dataset>/tables/<table>``. Lake files
    are Delta's to manage (vacuum), never pruned by name like the other outputs."""
    return f"{dataset}/{TABLES}/{table}"


def run_paths(blob_name: str, run_id: str, dataset: str | None) -> RunPaths:
    return RunPaths(dataset=dataset or UNKNOWN_DATASET, source_key=source_key(blob_name), run_id=run_id)
