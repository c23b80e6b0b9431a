"""The quality report of a run: a self-contained HTML page, and the same summary as text.

Both are made from the manifest alone, so a report can be rebuilt for any past run and the
command line (``python -m shared report``) prints exactly what the page shows. The page has
no scripts, no external assets and no links (the chart is inline SVG), so it opens offline
from the blob, a download or a mail attachment.
"""

from __future__ import annotations

import html
from typing import Any

from shared.core.errors import FILE_REASONS
from shared.core.rules import ROW_REASON_MEANINGS
from shared.core.source import ONE_COLUMN

CHART_BARS = 12
TEXT_REASONS = 12


# --- what both views show ---------------------------------------------------------------------


def reasons_by_code(manifest: dict[str, Any]) -> list[tuple[str, int, list[tuple[str | None, int]]]]:
    """Rejected rows per reason code, most first, each with its columns (most first)."""
    per: dict[str, list[tuple[str | None, int]]] = {}
    for r in manifest.get("quality", {}).get("rejects_by_reason", []):
        per.setdefault(r["reason"], []).append((r.get("column"), int(r["rows"])))
    out = [(reason, sum(n for _, n in cols), sorted(cols, key=lambda c: (-c[1], c[0] or ""))) for reason, cols in per.items()]
    return sorted(out, key=lambda r: (-r[1], r[0]))


def drift_notes(manifest: dict[str, Any]) -> list[str]:
    """Schema drift, one sentence each; empty when the header is what the contract says."""
    drift = manifest.get("quality", {}).get("drift", {})
    notes = []
    if drift.get("extra_columns"):
        policy = drift.get("extra_columns_policy", "discard")
        fate = {"keep": "kept as extra_* columns of the clean rows", "discard": "left out of every output"}.get(policy, policy)
        notes.append(f"columns not in the contract ({fate}): {', '.join(drift['extra_columns'])}")
    if drift.get("missing_optional_columns"):
        notes.append(f"optional columns missing (their values are null): {', '.join(drift['missing_optional_columns'])}")
    if drift.get("column_order_changed"):
        notes.append("columns arrive in another order than the contract lists them (matched by name)")
    if drift.get("unnamed_columns"):
        notes.append(f"{drift['unnamed_columns']} column(s) with an empty header name (ignored)")
    return notes


def format_notes(manifest: dict[str, Any]) -> str:
    """How the bytes arrived: encoding, compression, delimiter, line ends, repairs."""
    f = manifest.get("format") or {}
    if not f:
        return ""
    parts = [str(f.get("encoding", "?"))]
    if f.get("compressed"):
        parts.append("gzip")
    if f.get("delimiter") == ONE_COLUMN:
        parts.append("one column (no delimiter)")
    elif f.get("delimiter"):
        parts.append(f"delimiter {f['delimiter']!r}")
    if f.get("line_end"):
        parts.append(f"line ends {f['line_end']}")
    if f.get("nul_bytes_removed"):
        parts.append(f"{f['nul_bytes_removed']:,} NUL bytes removed")
    if f.get("bytes_in") is not None:
        parts.append(f"{f['bytes_in']:,} bytes")
    return ", ".join(parts)


def _value(v: Any) -> str:
    return "" if v is None else str(v)


def _balanced(c: dict[str, Any]) -> bool:
    return c["rows_read"] == c["rows_valid"] + c["rows_rejected"] + c["rows_duplicate"]


DUPLICATE_WARNING_SHARE = 0.05
"""Above this share of the rows read, duplicates are worth a person's look: a feed whose lines
legitimately repeat (one item per line) would lose them under row de-duplication."""


def count_warnings(manifest: dict[str, Any]) -> list[str]:
    """Counts that should surprise a user, said out loud: many duplicates, nothing valid."""
    c = manifest.get("counts") or {}
    read = c.get("rows_read") or 0
    if manifest.get("status") != "succeeded":
        return []
    if not read:
        return ["the file has no data rows: nothing was added"]
    out = []
    dup = c.get("rows_duplicate") or 0
    if dup > DUPLICATE_WARNING_SHARE * read:
        dedup = manifest.get("quality", {}).get("dedup") or {}
        mode, key = dedup.get("mode", "row"), dedup.get("key") or []
        rule = f'mode = "key", key = {key}' if mode == "key" else f'mode = "{mode}" (whole rows)'
        out.append(
            f"{dup:,} of {read:,} rows ({dup / read:.1%}) were dropped as duplicates under [dedup] {rule}: "
            'if these repeats are real rows (one item per line), set [dedup] mode = "none" in the contract'
        )
    if not c.get("rows_valid"):
        out.append("no row was valid: this file adds nothing to the aggregates (see the rejects)")
    return out


# --- text ---------------------------------------------------------------------------------------


def text_summary(manifest: dict[str, Any]) -> str:
    """What the command line prints for a run: the report page, as text."""
    c = manifest["counts"]
    src = manifest["source"]["blob"]
    version = manifest.get("contract_version")
    head = f"{manifest['dataset']} · {src} · run {manifest['run_id']} · {manifest['status']}"
    lines = [head + (f" · contract v{version}" if version is not None else "")]
    if manifest["status"] != "succeeded":
        err = manifest.get("error", {})
        code = err.get("code", "")
        lines.append(f"  refused: {code} - {err.get('detail')}")
        if code in FILE_REASONS:
            lines.append(f"  ({FILE_REASONS[code]}; the file was copied to quarantine and nothing was loaded)")
        return "\n".join(lines)
    lines.append(
        f"  rows read {c['rows_read']:,} = valid {c['rows_valid']:,} + rejected {c['rows_rejected']:,}"
        f" + duplicate {c['rows_duplicate']:,}" + ("" if _balanced(c) else "  (does NOT add up)")
    )
    lines.extend(f"  WARNING: {w}" for w in count_warnings(manifest))
    for name, n in c.get("groups", {}).items():
        lines.append(f"  aggregate {name}: {n:,} groups")
    reasons = reasons_by_code(manifest)
    if reasons:
        lines.append("  rejected by reason:")
        for reason, n, cols in reasons[:TEXT_REASONS]:
            where = ", ".join(f"{col or '(row)'} {k:,}" for col, k in cols)
            lines.append(f"    {reason:<18} {n:>10,}  {where}")
        if len(reasons) > TEXT_REASONS:
            lines.append(f"    … and {len(reasons) - TEXT_REASONS} more reasons")
    columns = manifest.get("quality", {}).get("columns", {})
    if columns:
        width = max(len(n) for n in columns)
        lines.append("  columns of the clean rows:")
        lines.append(f"    {'column':<{width}}  {'type':<11} {'nulls':>7}  min … max")
        for name, s in columns.items():
            span = f"{_value(s.get('min'))} … {_value(s.get('max'))}" if "min" in s else ""
            lines.append(f"    {name:<{width}}  {_value(s.get('type')):<11} {s.get('null_rate', 0):>7.2%}  {span}".rstrip())
    for note in drift_notes(manifest):
        lines.append(f"  drift: {note}")
    fmt = format_notes(manifest)
    if fmt:
        lines.append(f"  source: {fmt}")
    return "\n".join(lines)


# --- HTML ---------------------------------------------------------------------------------------


def _bar_chart(rows: list[tuple[str, int]]) -> str:
    """Horizontal bars as inline SVG: no script, no font or stylesheet to fetch."""
    if not rows:
        return "<p class=muted>No row was rejected.</p>"
    width, bar_h, gap, label_w = 640, 22, 6, 200
    top = max(n for _, n in rows) or 1
    height = len(rows) * (bar_h + gap)
    parts = [f'<svg role="img" aria-label="rejected rows by reason" width="{width}" height="{height}">']
    for i, (label, n) in enumerate(rows):
        y = i * (bar_h + gap)
        w = max(2, int((width - label_w - 90) * n / top))
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" font-size="13">{html.escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h}" fill="#c0392b" rx="3"/>')
        parts.append(f'<text x="{label_w + w + 6}" y="{y + 15}" font-size="13">{n:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:960px;color:#222;padding:0 1rem}
h1{font-size:1.4rem;margin-bottom:.2rem} .muted{color:#777} .status{font-weight:600}
.tiles{display:flex;gap:1rem;margin:1.2rem 0} .tile{flex:1;background:#f4f6f8;border-radius:8px;padding:.8rem 1rem}
.tile .n{font-size:1.6rem;font-weight:700} .tile .l{color:#555}
table{border-collapse:collapse;width:100%;margin:.6rem 0}
td,th{border-bottom:1px solid #e3e3e3;padding:.35rem .5rem;text-align:left}
.num{text-align:right} code{font-size:.9em}
.error{background:#fdecea;border-left:4px solid #c0392b;padding:.8rem 1rem;margin:1rem 0}
"""


def html_report(manifest: dict[str, Any]) -> str:
    """A page a person would rather look at than read the JSON."""
    e = html.escape
    src = manifest["source"]
    status = manifest["status"]
    balance = "✔ every row is accounted for" if _balanced(manifest["counts"]) else "✘ rows do not add up"
    body = _html_body(manifest) if status == "succeeded" else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(manifest["dataset"])} · {e(src["blob"])}</title>
<style>{_STYLE}</style></head><body>
<h1>{e(manifest["dataset"])} — {e(src["blob"])}</h1>
<div class=muted>run {e(manifest["run_id"])} · contract v{e(str(manifest.get("contract_version")))}
 · ETag {e(str(src.get("etag", "")))} · {e(str(manifest.get("created_at", "")))}</div>
<p class=status>Status: {e(status)}{" · " + balance if status == "succeeded" else ""}</p>
{_html_error(manifest)}
{body}
</body></html>
"""


def _html_body(manifest: dict[str, Any]) -> str:
    """A succeeded run: the row counts, rejects by reason, the clean columns, drift, aggregates."""
    e = html.escape
    c = manifest["counts"]
    counts = (("rows read", c["rows_read"]), ("valid", c["rows_valid"]), ("rejected", c["rows_rejected"]))
    tiles = "".join(
        f"<div class=tile><div class=n>{n:,}</div><div class=l>{e(label)}</div></div>"
        for label, n in (*counts, ("duplicates", c["rows_duplicate"]))
    )
    reasons = reasons_by_code(manifest)
    chart = _bar_chart([(reason, n) for reason, n, _ in reasons[:CHART_BARS]])
    drift_html = "".join(f"<li>{e(d)}</li>" for d in drift_notes(manifest)) or "<li>None: the header matches the contract.</li>"
    warnings = "".join(f"<div class=error><b>Warning</b>: {e(w)}</div>" for w in count_warnings(manifest))
    groups = "".join(f"<li>{e(k)}: {v:,} groups</li>" for k, v in c.get("groups", {}).items())
    fmt = format_notes(manifest)
    return (
        f"<div class=tiles>{tiles}</div>\n{warnings}<h2>Rejected rows by reason</h2>\n{chart}\n{_html_reasons(reasons)}\n"
        f"<h2>Columns of the clean rows</h2>\n{_html_columns(manifest.get('quality', {}).get('columns', {}))}\n"
        f"<h2>Schema drift</h2><ul>{drift_html}</ul>\n<h2>Aggregates</h2><ul>{groups or '<li>none</li>'}</ul>\n"
        + (f"<h2>Source</h2><p>{e(fmt)}</p>\n" if fmt else "")
        + lake_html(manifest)
    )


def lake_html(manifest: dict[str, Any]) -> str:
    """Where the run's rows are read: each Delta table and the commit that published them."""
    lake = manifest.get("outputs", {}).get("lake")
    if not lake:
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(output)}</td><td><code>curated/{e(t['path'])}</code></td>"
        f"<td class=num>{e(str(t['version'])) if t.get('version') is not None else 'not yet: committed when loaded'}</td></tr>"
        for output, t in lake["tables"].items()
    )
    return (
        "<h2>Lake tables</h2><p>Delta tables, partitioned by <code>_source_key</code>: this run's rows replace the "
        "source's in one commit, made once PostgreSQL holds them.</p>"
        f"<table><tr><th>output</th><th>table</th><th class=num>commit version</th></tr>{rows}</table>\n"
    )


def _html_reasons(reasons: list[tuple[str, int, list[tuple[str | None, int]]]]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td><code>{e(reason)}</code></td><td>{e(col or '(whole row)')}</td><td class=num>{k:,}</td>"
        f"<td class=muted>{e(ROW_REASON_MEANINGS.get(reason, ''))}</td></tr>"
        for reason, _, cols in reasons
        for col, k in cols
    )
    if not rows:
        return ""
    return f"<table><tr><th>reason</th><th>column</th><th class=num>rows</th><th>what it means</th></tr>{rows}</table>"


def _html_columns(columns: dict[str, dict[str, Any]]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(name)}</td><td>{e(_value(s.get('type')))}</td><td class=num>{s.get('nulls', 0):,}</td>"
        f"<td class=num>{s.get('null_rate', 0):.2%}</td><td>{e(_value(s.get('min')))}</td><td>{e(_value(s.get('max')))}</td></tr>"
        for name, s in columns.items()
    )
    head = "<tr><th>column</th><th>type</th><th class=num>nulls</th><th class=num>null rate</th><th>min</th><th>max</th></tr>"
    return f"<table>{head}{rows}</table>"


def _html_error(manifest: dict[str, Any]) -> str:
    """A refused file: its code, what the code means, the detail."""
    error = manifest.get("error")
    if not error:
        return ""
    e = html.escape
    meaning = FILE_REASONS.get(error.get("code", ""), "")
    return (
        f"<div class=error><b>{e(str(error.get('code')))}</b>: {e(meaning)}<br>{e(str(error.get('detail', '')))}"
        "<br>The file was copied to quarantine; nothing was loaded.</div>"
    )
