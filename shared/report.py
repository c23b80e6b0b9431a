"""The quality report of a run: a self-contained HTML page, and the same summary as text.

The page has no scripts and no external assets (the chart is inline SVG), so it opens
offline from the blob, a download or a mail attachment.
"""

from __future__ import annotations

import html
from typing import Any

from shared.faults import FILE_REASONS


def text_summary(manifest: dict[str, Any]) -> str:
    """What the command line prints for a run."""
    c = manifest["counts"]
    src = manifest["source"]["blob"]
    lines = [f"{manifest['dataset']} · {src} · run {manifest['run_id']} · {manifest['status']}"]
    if manifest["status"] != "succeeded":
        err = manifest.get("error", {})
        lines.append(f"  refused: {err.get('code')} - {err.get('detail')}")
        return "\n".join(lines)
    lines.append(
        f"  rows read {c['rows_read']:,} = valid {c['rows_valid']:,} + rejected {c['rows_rejected']:,}"
        f" + duplicate {c['rows_duplicate']:,}"
    )
    for name, n in c.get("groups", {}).items():
        lines.append(f"  aggregate {name}: {n:,} groups")
    reasons = manifest.get("quality", {}).get("rejects_by_reason", [])
    for r in reasons[:10]:
        col = f" ({r['column']})" if r.get("column") else ""
        lines.append(f"  rejected {r['rows']:>10,}  {r['reason']}{col}")
    drift = manifest.get("quality", {}).get("drift", {})
    if drift.get("extra_columns"):
        lines.append(f"  drift: extra columns {', '.join(drift['extra_columns'])} ({drift.get('extra_columns_policy')})")
    if drift.get("missing_optional_columns"):
        lines.append(f"  drift: optional columns missing {', '.join(drift['missing_optional_columns'])}")
    return "\n".join(lines)


def _bar_chart(rows: list[tuple[str, int]]) -> str:
    if not rows:
        return "<p class=muted>No row was rejected.</p>"
    width, bar_h, gap, label_w = 640, 22, 6, 260
    top = max(n for _, n in rows) or 1
    height = len(rows) * (bar_h + gap)
    parts = [
        f'<svg role="img" aria-label="rejected rows by reason" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, n) in enumerate(rows):
        y = i * (bar_h + gap)
        w = max(2, int((width - label_w - 80) * n / top))
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" font-size="13">{html.escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h}" fill="#c0392b" rx="3"/>')
        parts.append(f'<text x="{label_w + w + 6}" y="{y + 15}" font-size="13">{n:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_report(manifest: dict[str, Any]) -> str:
    """A page a person would rather look at than read the JSON."""
    e = html.escape
    c = manifest["counts"]
    src = manifest["source"]
    quality = manifest.get("quality", {})
    status = manifest["status"]
    rows = [
        ("rows read", c["rows_read"]),
        ("valid", c["rows_valid"]),
        ("rejected", c["rows_rejected"]),
        ("duplicates", c["rows_duplicate"]),
    ]
    tiles = "".join(f"<div class=tile><div class=n>{n:,}</div><div class=l>{e(label)}</div></div>" for label, n in rows)
    reasons = quality.get("rejects_by_reason", [])
    chart = _bar_chart([(f"{r['reason']}" + (f" · {r['column']}" if r.get("column") else ""), r["rows"]) for r in reasons[:15]])
    columns = quality.get("columns", {})
    col_rows = "".join(
        f"<tr><td>{e(name)}</td><td>{e(str(s.get('type')))}</td><td>{s.get('null_rate', 0):.2%}</td>"
        f"<td>{e(str(s.get('min', '')))}</td><td>{e(str(s.get('max', '')))}</td></tr>"
        for name, s in columns.items()
    )
    drift = quality.get("drift", {})
    drift_items = []
    if drift.get("extra_columns"):
        drift_items.append(
            f"Columns not in the contract ({e(drift.get('extra_columns_policy', ''))}): {e(', '.join(drift['extra_columns']))}"
        )
    if drift.get("missing_optional_columns"):
        drift_items.append(f"Optional columns missing: {e(', '.join(drift['missing_optional_columns']))}")
    if drift.get("column_order_changed"):
        drift_items.append("Columns arrive in a different order than the contract lists them (matched by name).")
    drift_html = "".join(f"<li>{d}</li>" for d in drift_items) or "<li>None: the header matches the contract.</li>"
    error = manifest.get("error")
    error_html = ""
    if error:
        meaning = FILE_REASONS.get(error.get("code", ""), "")
        error_html = f"<div class=error><b>{e(error['code'])}</b>: {e(meaning)}<br>{e(error.get('detail', ''))}</div>"
    groups = "".join(f"<li>{e(k)}: {v:,} groups</li>" for k, v in c.get("groups", {}).items())
    balance = (
        "✔ every row is accounted for"
        if c["rows_read"] == c["rows_valid"] + c["rows_rejected"] + c["rows_duplicate"]
        else "✘ rows do not add up"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(manifest["dataset"])} · {e(src["blob"])}</title>
<style>
body{{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:960px;color:#222;padding:0 1rem}}
h1{{font-size:1.4rem;margin-bottom:.2rem}} .muted{{color:#777}} .status{{font-weight:600}}
.tiles{{display:flex;gap:1rem;margin:1.2rem 0}} .tile{{flex:1;background:#f4f6f8;border-radius:8px;padding:.8rem 1rem}}
.tile .n{{font-size:1.6rem;font-weight:700}} .tile .l{{color:#555}}
table{{border-collapse:collapse;width:100%}} td,th{{border-bottom:1px solid #e3e3e3;padding:.35rem .5rem;text-align:left}}
.error{{background:#fdecea;border-left:4px solid #c0392b;padding:.8rem 1rem;margin:1rem 0}}
</style></head><body>
<h1>{e(manifest["dataset"])} — {e(src["blob"])}</h1>
<div class=muted>run {e(manifest["run_id"])} · contract v{e(str(manifest.get("contract_version")))}
 · ETag {e(src.get("etag", ""))} · {e(manifest.get("created_at", ""))}</div>
<p class=status>Status: {e(status)} · {balance}</p>
{error_html}
<div class=tiles>{tiles}</div>
<h2>Rejected rows by reason</h2>
{chart}
<h2>Columns of the clean rows</h2>
<table><tr><th>column</th><th>type</th><th>null rate</th><th>min</th><th>max</th></tr>{col_rows}</table>
<h2>Schema drift</h2><ul>{drift_html}</ul>
<h2>Aggregates</h2><ul>{groups or "<li>none</li>"}</ul>
</body></html>
"""
