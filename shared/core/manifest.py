"""The manifest: what a run read, what it wrote, and how every row was accounted for.

One JSON document per run (``shared.core.documents.Manifest``), published last (after every
output it names), so that a reader who finds a manifest can trust the whole set. The load
queue carries a compact copy (``documents.load_request``): the fields the loader needs, under
the 64 KB a queue message may hold.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.core.documents import MANIFEST_VERSION, REJECTED, SUCCEEDED, BlobRef, Counts, Manifest, Outputs, SourceVersion
from shared.core.layout import BlobInfo, RunPaths

if TYPE_CHECKING:
    from shared.core.source import Source
    from shared.core.transform import Result

__all__ = ["blob_ref", "of_transform", "rejected", "succeeded"]


def _source(info: BlobInfo) -> SourceVersion:
    return {
        "container": info.container,
        "blob": info.name,
        "etag": info.etag,
        "last_modified": info.last_modified.astimezone(UTC).isoformat(),
        "size": info.size,
    }


def succeeded(
    *,
    info: BlobInfo,
    paths: RunPaths,
    contract_version: int,
    counts: Counts,
    outputs: Outputs,
    quality: dict[str, Any],
    source_format: dict[str, Any],
    timings: dict[str, float],
) -> Manifest:
    return {
        "manifest_version": MANIFEST_VERSION,
        "status": SUCCEEDED,
        "run_id": paths.run_id,
        "dataset": paths.dataset,
        "contract_version": contract_version,
        "source": _source(info),
        "source_key": paths.source_key,
        "counts": counts,
        "outputs": outputs,
        "quality": quality,
        "format": source_format,
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "created_at": datetime.now(UTC).isoformat(),
    }


def of_transform(result: Result, src: Source) -> dict[str, Any]:
    """What a transformed file contributes to its manifest: ``succeeded``'s ``counts``,
    ``quality`` and ``source_format`` (the same for a published run and a dry run)."""
    return {
        "counts": {
            "rows_read": result.rows_read,
            "rows_valid": result.rows_valid,
            "rows_rejected": result.rows_rejected,
            "rows_duplicate": result.rows_duplicate,
            "groups": result.groups,
        },
        "quality": {
            "rejects_by_reason": result.rejects_by_reason,
            "columns": result.columns,
            "drift": result.drift,
            "dedup": result.dedup,
        },
        "source_format": {
            "encoding": src.encoding,
            "compressed": src.compressed,
            "delimiter": src.delimiter,
            "line_end": {"\n": "LF or CRLF", "\r": "CR"}[src.eol],
            "bytes_in": src.bytes_in,
            "bytes_text": src.bytes_text,
            "chunks": src.segment_count,
            **src.notes,
        },
    }


def rejected(
    *,
    info: BlobInfo,
    paths: RunPaths,
    contract_version: int | None,
    code: str,
    detail: str,
    outputs: Outputs,
    timings: dict[str, float],
    rows_read: int = 0,
) -> Manifest:
    """A refused file: its rows (when it was read through) all count as rejected."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "status": REJECTED,
        "run_id": paths.run_id,
        "dataset": paths.dataset,
        "contract_version": contract_version,
        "source": _source(info),
        "source_key": paths.source_key,
        "counts": {"rows_read": rows_read, "rows_valid": 0, "rows_rejected": rows_read, "rows_duplicate": 0, "groups": {}},
        "error": {"code": code, "detail": detail},
        "outputs": outputs,
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "created_at": datetime.now(UTC).isoformat(),
    }


def blob_ref(pair: tuple[str, str]) -> BlobRef:
    return {"container": pair[0], "name": pair[1]}
