"""``status`` in words: what each state means, what waits and why, and what needs a person.

The ledger and the nightly plan speak in codes (``missed``, ``backing_off``, ``unknown_dataset``);
a person reading ``status`` needs the sentence behind each, and, when something will not heal by
itself, the command that heals it. ``needs_a_person`` is also what makes ``status`` exit 1:

* a message parked in a poison queue (every delivery failed; nothing retries it any more);
* a blob whose last run failed;
* a blob refused ``unknown_dataset`` (it waits for a contract) or ``rejected_by_database``
  (PostgreSQL refused the data: a table or contract to fix);
* a blob loaded and then deleted from raw (its rows stay in PostgreSQL until ``forget``).

A file refused for its content (empty, not CSV, columns missing, ...) is an outcome, not an
alarm: it is in quarantine with its reasons, and a corrected upload is a new version.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from shared.core.errors import FILE_REASONS
from shared.core.redaction import printable
from shared.core.report import DUPLICATE_WARNING_SHARE

__all__ = ["needs_a_person", "parked_blobs", "render_status", "waiting_with_parked"]

WAITING = {
    "missed": "no run yet: its event was missed or is still on its way (the nightly job sends it)",
    "new_version": "replaced in raw by a new version that has not run yet",
    "failed": "the last run failed and its back-off is over: the nightly job runs it again",
    "old_contract": "run under an older contract version: the nightly job runs it again under the current one",
    "parked": "parked in a poison queue after every delivery failed: fix the cause, then `python -m shared replay --poison`",
}
"""Why a blob version waits for a run, by the nightly plan's reason code."""

HELD = {
    "backing_off": "failed, waiting out its back-off (1 h, 2 h, 4 h … a day) before the next try",
    "deferred_to_next_run": "beyond one night's batch (REPROCESS_BATCH): sent on a later night",
    "aged_out_of_raw": "deleted from raw by the retention policy (RAW_RETENTION_DAYS): its rows stay, as intended",
}
"""What else the plan counts, in words."""

REFUSALS_FOR_A_PERSON = {
    "unknown_dataset": "add the dataset's contract (contracts/<dataset>.toml; in Azure it arrives with azd deploy), "
    "then `python -m shared replay --status rejected --reason unknown_dataset`",
    "rejected_by_database": "PostgreSQL refused the data (`python -m shared report BLOB` says why); fix the table or "
    "the contract, then `python -m shared replay --status rejected --reason rejected_by_database`",
}


def _version_of(body: str) -> tuple[str, str] | None:
    """The raw blob (and ETag, when the message names one) a parked message was about: a
    blob-trigger entry, a load request (its manifest) or an ingest request."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if "BlobName" in doc:
        return str(doc["BlobName"]), str(doc.get("ETag") or "").strip('"')
    source = doc.get("source")
    if isinstance(source, dict) and "blob" in source:
        return str(source["blob"]), str(source.get("etag") or "").strip('"')
    return (str(doc["blob"]), str(doc.get("etag") or "").strip('"')) if "blob" in doc else None


def parked_blobs(queues: Any, encoding: str) -> list[dict[str, str]]:
    """What the poison queues hold, as blob versions (``etag`` empty when the message names
    none); a peek sees 32 messages per queue."""
    from shared.storage import poison

    out = []
    for queue in poison.POISON_QUEUES:
        for message in poison.peek(queues, queue, encoding=encoding):
            version = _version_of(message.body)
            if version:
                out.append({"blob": version[0], "etag": version[1], "queue": queue})
    return out


def is_parked(parked: list[dict[str, str]], blob: str, etag: str | None = None) -> str | None:
    """The poison queue holding this version (any version, without an ETag), if one does."""
    etag = (etag or "").strip('"')
    for p in parked:
        if p["blob"] == blob and (not etag or not p["etag"] or p["etag"] == etag):
            return p["queue"]
    return None


def waiting_with_parked(plan: Any, parked: list[dict[str, str]]) -> dict[str, Any]:
    """The plan's summary, with a version whose message is parked counted as parked: the plan
    sees no ledger row for it and would call it missed, which sends a person the wrong way."""
    summary = plan.summary()
    reasons: dict[str, int] = {}
    for r in plan.requests:
        reason = "parked" if is_parked(parked, r["blob"], r.get("etag")) else r["reason"]
        reasons[reason] = reasons.get(reason, 0) + 1
    return {**summary, "reasons": reasons}


def needs_a_person(s: dict[str, Any]) -> list[str]:
    """One sentence per thing that will not heal by itself, each with what to do."""
    out = []
    parked = sum(s["poison"].values())
    if parked:
        out.append(f"{parked} message(s) parked in poison queues: fix the cause, then `python -m shared replay --poison`")
    for o in s["outstanding"]:
        example = printable(str(o["example"]))
        if o["status"] == "failed":
            out.append(
                f"{o['count']} blob(s) whose last run failed ({o['reason']}), e.g. {example}: retried after a back-off, "
                "or now with `python -m shared replay --status failed` once the cause is fixed"
            )
        elif o["reason"] in REFUSALS_FOR_A_PERSON:
            out.append(f"{o['count']} blob(s) refused {o['reason']}, e.g. {example}: {REFUSALS_FOR_A_PERSON[o['reason']]}")
    gone = s["loaded_but_deleted_from_raw"]
    if gone:
        out.append(
            f"{len(gone)} blob(s) loaded, then deleted from raw, e.g. {printable(gone[0])}: their rows are still in PostgreSQL; "
            "`python -m shared forget BLOB` removes them (or put the file back)"
        )
    return out


def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")


def render_status(s: dict[str, Any]) -> str:
    """The status as a person reads it: sections of sentences, no Python reprs."""
    lines = [f"Since {_when(s['since'])}" + (f" · dataset {s['dataset']}" if s["dataset"] else "")]
    runs = s["runs_by_status"]
    lines.append("Runs: " + (" · ".join(f"{k} {v:,}" for k, v in sorted(runs.items())) or "none"))
    if s["failures_by_reason"]:
        lines.append("Failures and refusals by reason:")
        for f in s["failures_by_reason"]:
            words = f"{FILE_REASONS[f['reason']]}; " if f["reason"] in FILE_REASONS else ""
            lines.append(f"  {f['status']:<9} {f['reason']:<22} {f['count']:>6,}   {words}e.g. {f['example']}")
    lines.append("Poison queues: " + " · ".join(f"{k} {v}" for k, v in s["poison"].items()))
    lag = s["lag_seconds"]
    if lag["count"]:
        lines.append(
            f"Landing to loaded: p50 {lag['p50']:.1f} s · p95 {lag['p95']:.1f} s · max {lag['max']:.1f} s (n={lag['count']})"
        )
    lines.extend(_waiting(s))
    lines.extend(_attention(s))
    lines.extend(_recent(s))
    return "\n".join(lines)


def _waiting(s: dict[str, Any]) -> list[str]:
    w = s["waiting"]
    rows = [(n, WAITING.get(reason, reason)) for reason, n in sorted(w["reasons"].items(), key=lambda kv: -kv[1])]
    rows += [(w[key], words) for key, words in HELD.items() if w.get(key)]
    if not rows:
        return ["Waiting for a run: nothing"]
    return ["Waiting for a run (blob versions):"] + [f"  {n:>6,}  {words}" for n, words in rows]


def _attention(s: dict[str, Any]) -> list[str]:
    if not s["needs_a_person"]:
        return ["Needs a person: nothing"]
    return ["Needs a person:"] + [f"  - {line}" for line in s["needs_a_person"]]


def _duplicates(r: dict[str, Any]) -> str:
    """A share of duplicates that should surprise a user, said on the run's line (see report)."""
    read, dup = r.get("read") or 0, r.get("duplicate") or 0
    if read and dup > DUPLICATE_WARNING_SHARE * read:
        return f"  WARNING: {dup / read:.0%} duplicates, check [dedup] mode (python -m shared report {printable(r['blob'])})"
    return ""


def _recent(s: dict[str, Any]) -> list[str]:
    if not s["recent"]:
        return []
    lines = ["Recent:"]
    for r in s["recent"]:
        counts = (
            f"read {r['read']:,} valid {r['valid']:,} rejected {r['rejected']:,} dup {r['duplicate']:,}"
            if r["read"] is not None
            else ""
        )
        err = f" [{r['error']}]" if r["error"] else ""
        queue = is_parked(s["parked"], r["blob"])
        where = f" [parked in {queue}]" if queue else ""
        lines.append(f"  {r['at'][:19]}  {r['status']:<10} {printable(r['blob'])}  {counts}{err}{where}{_duplicates(r)}")
    return lines
