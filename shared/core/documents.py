"""The documents that cross a queue or outlive a run, typed, and validated where they are read.

    Manifest        one per run, in ``curated/<dataset>/manifests/``; written last by ingest
    load request    the manifest less its quality details, on ``load-requests``
    IngestRequest   a re-drive (nightly job, replay, backfill), on ``ingest-requests``

A queue delivers whatever was put on it: a message of another program, a hand-edited body, a
manifest of a later version of this pipeline. ``parse_load_request`` and
``parse_ingest_request`` check a body against the TypedDicts below (every required key, every
type, every ``Literal``) and refuse what does not fit with a ``DocumentRefused`` that carries a
code, so that no reader ever meets a ``KeyError`` half way through its work.

The run and ledger statuses are ``Literal`` types here and nowhere else: the Python that
decides them and the SQL that writes them (``shared.postgres.ledger``) both take them from
this module. (No ``from __future__ import annotations`` here: TypedDict reads
``NotRequired`` only from evaluated annotations.)
"""

import json
import types
import typing
from typing import Any, Final, Literal, NotRequired, TypedDict, Union, get_args, get_origin

from shared.core.errors import PipelineError

__all__ = [
    "DONE",
    "FAILED",
    "LEDGER_STATUSES",
    "LOADED",
    "MANIFEST_VERSION",
    "QUEUED",
    "REJECTED",
    "REMOVED",
    "SUCCEEDED",
    "SUPERSEDED",
    "BlobRef",
    "CleanRef",
    "Counts",
    "DocumentRefused",
    "ErrorInfo",
    "IngestRequest",
    "LakeRef",
    "LakeTable",
    "LedgerStatus",
    "LoadOutcome",
    "Manifest",
    "Outputs",
    "RunStatus",
    "SourceVersion",
    "load_request",
    "parse_ingest_request",
    "parse_load_request",
]

MANIFEST_VERSION: Final = 1

RunStatus = Literal["succeeded", "rejected"]
"""What ingest made of a file: outputs published, or the file refused and quarantined."""
SUCCEEDED: Final = "succeeded"
REJECTED: Final = "rejected"

LedgerStatus = Literal["loaded", "rejected", "failed", "superseded", "removed", "queued"]
"""A source version's row in the ledger:

    loaded      the run's outputs replaced the source's previous contribution
    rejected    the file was refused (quarantined); nothing was loaded
    failed      a load attempt failed; ``attempts`` and ``error_*`` say how (may still succeed)
    superseded  a newer version of the blob was already loaded; this one was skipped
    removed     the source's contribution was removed on request (``forget``)
    queued      the nightly job found the version with no run and asked for one
"""
LEDGER_STATUSES: Final[tuple[LedgerStatus, ...]] = get_args(LedgerStatus)
LOADED: Final = "loaded"
FAILED: Final = "failed"
SUPERSEDED: Final = "superseded"
REMOVED: Final = "removed"
QUEUED: Final = "queued"
DONE: Final[tuple[LedgerStatus, ...]] = (LOADED, REJECTED, SUPERSEDED)
"""Outcomes after which a blob version needs nothing more (unless its contract changes)."""

LoadOutcome = Literal["loaded", "rejected", "superseded", "duplicate", "stale", "failed"]
"""What one delivery of a load request did (``duplicate``, ``stale``: nothing, and why)."""


class Counts(TypedDict):
    """Every row read is valid, rejected or a duplicate; ``groups`` per aggregate."""

    rows_read: int
    rows_valid: int
    rows_rejected: int
    rows_duplicate: int
    groups: dict[str, int]


class SourceVersion(TypedDict):
    """The raw blob version a run read (the ETag without quotes)."""

    container: str
    blob: str
    etag: str
    last_modified: str
    size: int


class BlobRef(TypedDict):
    container: str
    name: str


class CleanRef(BlobRef):
    """The clean rows: part files under ``prefix``; ``name`` is the first of them."""

    prefix: str
    parts: list[str]


class LakeTable(TypedDict):
    """A Delta table a run publishes to: ``path`` in the curated container; ``version``, the
    commit that published the run, once the loader has made it."""

    path: str
    version: NotRequired[int]


class LakeRef(TypedDict):
    """The run's rows in the lake: the staged commit (``shared.core.lake.StagedCommit``) and the
    table of every output (``clean``, ``aggregate:<name>``, ``distinct:<agg>__<metric>``)."""

    staged: BlobRef
    tables: dict[str, LakeTable]


class Outputs(TypedDict, total=False):
    clean: CleanRef
    aggregates: dict[str, BlobRef]
    distinct_values: dict[str, BlobRef]
    rejects: BlobRef
    report: BlobRef
    manifest: BlobRef
    quarantined: BlobRef
    error_report: BlobRef
    lake: LakeRef


class ErrorInfo(TypedDict):
    code: str
    detail: str


class Manifest(TypedDict):
    """One run of one source version. Its compact copy on the load queue (``load_request``)
    leaves out ``quality`` and ``format``."""

    manifest_version: int
    status: RunStatus
    run_id: str
    dataset: str
    contract_version: int | None
    source: SourceVersion
    source_key: str
    counts: Counts
    outputs: Outputs
    timings: dict[str, float]
    created_at: str
    force: NotRequired[bool]
    error: NotRequired[ErrorInfo]
    quality: NotRequired[dict[str, Any]]
    format: NotRequired[dict[str, Any]]


class IngestRequest(TypedDict):
    """Ingest ``container/blob`` again; ``force`` replaces a contribution already loaded."""

    blob: str
    container: NotRequired[str]
    reason: NotRequired[str]
    force: NotRequired[bool]
    etag: NotRequired[str]
    requested_at: NotRequired[str]


class DocumentRefused(PipelineError):
    """A queue message that is not a document of ours: retrying it cannot help.

    Codes: ``not_json``, ``not_a_document`` (JSON, but not an object of this pipeline),
    ``unknown_version`` (a manifest version this code does not read), ``malformed_document``
    (a key missing or of the wrong type; the detail names it)."""


def load_request(manifest: Manifest) -> str:
    """The queue message for the loader: the manifest without its quality details."""
    compact = {k: v for k, v in manifest.items() if k not in ("quality", "format")}
    return json.dumps(compact, separators=(",", ":"), default=str)


def parse_load_request(body: str | bytes) -> Manifest:
    doc = _json_object(body, "a load request")
    if "manifest_version" not in doc or "run_id" not in doc:
        raise DocumentRefused("not_a_document", "a JSON object, but not a load request of this pipeline (no manifest_version)")
    if doc["manifest_version"] != MANIFEST_VERSION:
        raise DocumentRefused(
            "unknown_version", f"manifest_version {doc['manifest_version']!r}; this code reads version {MANIFEST_VERSION}"
        )
    _check(doc, Manifest, "load request")
    return typing.cast(Manifest, doc)


def parse_ingest_request(body: str | bytes) -> IngestRequest:
    doc = _json_object(body, "an ingest request")
    if "blob" not in doc:
        raise DocumentRefused("not_a_document", "a JSON object, but not an ingest request of this pipeline (no blob)")
    _check(doc, IngestRequest, "ingest request")
    return typing.cast(IngestRequest, doc)


def _json_object(body: str | bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DocumentRefused("not_json", f"expected {what}, got text that is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict):
        raise DocumentRefused("not_a_document", f"expected {what} (a JSON object), got a JSON {type(doc).__name__}")
    return doc


# --- checking a value against a TypedDict ------------------------------------------------------


def _check(value: Any, kind: Any, where: str) -> None:
    """Raise ``malformed_document`` naming the first key whose value does not fit ``kind``."""
    problem = _mismatch(value, kind, where)
    if problem:
        raise DocumentRefused("malformed_document", problem)


def _mismatch(value: Any, kind: Any, where: str) -> str | None:
    origin = get_origin(kind)
    if origin is NotRequired:
        return _mismatch(value, get_args(kind)[0], where)
    if kind is Any:
        return None
    if origin is Literal:
        return None if value in get_args(kind) else f"{where} is {value!r}, expected one of {list(get_args(kind))}"
    if origin in (Union, types.UnionType):
        if any(_mismatch(value, option, where) is None for option in get_args(kind)):
            return None
        return f"{where} is {_shown(value)}, expected {_name(kind)}"
    if typing.is_typeddict(kind):
        if not isinstance(value, dict):
            return f"{where} is {_shown(value)}, expected an object"
        hints = typing.get_type_hints(kind)
        for key in sorted(kind.__required_keys__):
            if key not in value:
                return f"{where} lacks {key!r}"
        for key, hint in hints.items():
            if key in value:
                problem = _mismatch(value[key], hint, f"{where}.{key}")
                if problem:
                    return problem
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"{where} is {_shown(value)}, expected an object"
        _, item = get_args(kind)
        return next((p for k, v in value.items() if (p := _mismatch(v, item, f"{where}.{k}"))), None)
    if origin is list:
        if not isinstance(value, list):
            return f"{where} is {_shown(value)}, expected a list"
        (item,) = get_args(kind)
        return next((p for i, v in enumerate(value) if (p := _mismatch(v, item, f"{where}[{i}]"))), None)
    if kind is type(None):
        return None if value is None else f"{where} is {_shown(value)}, expected null"
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"{where} is {_shown(value)}, expected a number"
    if kind is int and isinstance(value, bool):
        return f"{where} is {_shown(value)}, expected an integer"
    return None if isinstance(value, kind) else f"{where} is {_shown(value)}, expected {_name(kind)}"


def _name(kind: Any) -> str:
    if get_origin(kind) in (Union, types.UnionType):
        return " or ".join(_name(k) for k in get_args(kind))
    names = {str: "text", int: "an integer", bool: "true or false", type(None): "null"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
