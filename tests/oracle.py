"""An independent recomputation of the bank contract, in plain Python with the csv module.

It shares no code with the pipeline (no polars, no shared/), so a bug in the transform cannot
hide by being repeated here. Slow, and only used on test-sized files.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path


@dataclass
class Expected:
    read: int = 0
    valid: int = 0
    rejected: int = 0
    duplicate: int = 0
    reasons: dict[tuple[str, str | None], int] = field(default_factory=dict)
    daily: dict[tuple[date, str, str], list[int]] = field(default_factory=dict)  # key -> [total_value, count, records]

    def add(self, other: Expected) -> Expected:
        """Two files loaded side by side: their per-file aggregates add up."""
        merged = Expected(
            self.read + other.read, self.valid + other.valid, self.rejected + other.rejected, self.duplicate + other.duplicate
        )
        for src in (self.daily, other.daily):
            for k, v in src.items():
                acc = merged.daily.setdefault(k, [0, 0, 0])
                for i in range(3):
                    acc[i] += v[i]
        return merged

    def view_rows(self) -> set[tuple[date, str, str, Decimal, Decimal, int]]:
        return {(k[0], k[1], k[2], Decimal(v[0]), Decimal(v[1]), v[2]) for k, v in self.daily.items()}


def _date(text: str) -> date | None:
    for fmt in ("%m/%d/%Y", "%Y-%m-%d"):
        try:
            d = datetime.strptime(text, fmt).date()
        except ValueError:
            continue
        return d if d.year >= 1000 else None
    return None


def _int(text: str) -> int | None:
    t = text.strip()
    if not t or not (t.lstrip("+-").isdigit()):
        return None
    return int(t)


def bank(path: Path | str) -> Expected:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    header = [h.strip().casefold() for h in rows[0]]
    idx = {name: header.index(name) for name in ("date", "domain", "location", "value", "transaction_count")}
    exp = Expected()
    seen: set[tuple[object, ...]] = set()
    for record in rows[1:]:
        exp.read += 1
        if len(record) > len(header) and any(v != "" for v in record[len(header) :]):
            exp.rejected += 1
            exp.reasons[("ragged_row", None)] = exp.reasons.get(("ragged_row", None), 0) + 1
            continue
        get = {k: (record[i] if i < len(record) else "") for k, i in idx.items()}
        d_txt, dom, loc = get["date"].strip(), get["domain"].strip().upper(), get["location"].strip()
        v_txt, c_txt = get["value"].strip(), get["transaction_count"].strip()
        reason = None
        if not d_txt:
            reason = ("missing_value", "txn_date")
        elif _date(d_txt) is None:
            reason = ("invalid_date", "txn_date")
        elif not dom:
            reason = ("missing_value", "domain")
        elif not loc:
            reason = ("missing_value", "location")
        elif not v_txt:
            reason = ("missing_value", "value")
        elif _int(v_txt) is None:
            reason = ("invalid_number", "value")
        elif _int(v_txt) < 0:  # type: ignore[operator]
            reason = ("out_of_range", "value")
        elif not c_txt:
            reason = ("missing_value", "transaction_count")
        elif _int(c_txt) is None:
            reason = ("invalid_number", "transaction_count")
        elif _int(c_txt) < 1:  # type: ignore[operator]
            reason = ("out_of_range", "transaction_count")
        if reason:
            exp.rejected += 1
            exp.reasons[reason] = exp.reasons.get(reason, 0) + 1
            continue
        row = (_date(d_txt), dom, loc, _int(v_txt), _int(c_txt))
        if row in seen:
            exp.duplicate += 1
            continue
        seen.add(row)
        exp.valid += 1
        acc = exp.daily.setdefault((row[0], dom, loc), [0, 0, 0])  # type: ignore[arg-type]
        acc[0] += row[3]  # type: ignore[operator]
        acc[1] += row[4]  # type: ignore[operator]
        acc[2] += 1
    return exp
