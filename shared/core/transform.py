"""The transform: raw CSV segments in, every output of a file out, in two passes and bounded memory.

    pass 1, per segment (``shared.core.source`` streams them from memory, read ahead in a thread):
      parse ─ clean & type (``shared.core.rules``; per distinct text where a column repeats, ``shared.core.dictionary``)
            ├─ rejected ─ rejects.parquet (line, first broken rule, its column, the raw text)
            └─ valid ─ spilled by key-hash bucket (``shared.core.dedup``: memory first, disk after)
    pass 2, per range of buckets:
      first occurrence of each key, by line ─┬─ clean/part-NNNNN.parquet
                                             ├─ partial aggregates, column statistics (``shared.core.aggregates``)
                                             └─ the rest counted as duplicates

Why two passes: keep-first de-duplication needs every earlier row of the file, and holding a
whole file's rows (or even their 128-bit fingerprints: 1.6 GB per 100M rows) is not bounded.
Copies of a row share a hash bucket, so each bucket range can be de-duplicated on its own,
exactly (comparing the values, not the hash), and its aggregates merged. Memory is bounded by
one segment in pass 1 and one range in pass 2, whatever the file's size.

polars parses a segment into rows but cannot tell a missing trailing field from an empty one,
nor where a row starts once a quoted field has held a line end: the line each row starts on
in the file, and whether it has the header's number of fields (if not: ``ragged_row``), are
counted from the segment's bytes (``shared.core.records``).

Nothing here touches Azure: the caller hands in a ``Source`` and a folder to write to.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shared.core import dedup, dictionary, records
from shared.core.aggregates import SLOT, AggregatePartials, ColumnStats
from shared.core.contract import Contract, normalise_header
from shared.core.errors import FileRefused
from shared.core.rules import ABSENT, INVALID_CODE, RAGGED_ROW, ColumnRules, cleaned_name, column_rules, dtype_of
from shared.core.source import Source

LINE = "_line"
EXTRA = "__extra"
RAGGED = "__ragged"
OK = "__ok"
SEED = 0x5EED_0001
MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD)
RANGE_ROWS = 500_000
"""Rows de-duplicated at once in pass 2 (a range of hash buckets), by each of two threads;
with 2M, 10M rows peak at 620 MiB instead of 500."""
PASS2_THREADS = 2
SPILL_MEMORY = 192 * 1024 * 1024
"""Spilled rows kept in memory before they go to disk (about 11M rows of the bank contract)."""


@dataclass
class Lineage:
    """Where a run's outputs come from; written into every Parquet file's metadata."""

    source_blob: str
    run_id: str
    etag: str = ""

    def metadata(self, contract: Contract) -> dict[str, str]:
        return {
            "pipeline.source_blob": self.source_blob,
            "pipeline.source_etag": self.etag,
            "pipeline.run_id": self.run_id,
            "pipeline.dataset": contract.dataset,
            "pipeline.contract_version": str(contract.version),
        }

    def columns(self) -> list[pl.Expr]:
        return [pl.lit(self.source_blob).alias("_source_blob"), pl.lit(self.run_id).alias("_run_id")]


@dataclass
class Outputs:
    clean: Path  # a folder of part files (``clean_parts``); polars reads it as one table
    rejects: Path
    aggregates: dict[str, Path]
    distinct_values: dict[str, Path] = field(default_factory=dict)
    clean_parts: list[Path] = field(default_factory=list)


@dataclass
class Result:
    rows_read: int
    rows_valid: int
    rows_rejected: int
    rows_duplicate: int
    groups: dict[str, int]
    rejects_by_reason: list[dict[str, Any]]
    columns: dict[str, dict[str, Any]]
    drift: dict[str, Any]
    outputs: Outputs
    seconds: float
    notes: dict[str, Any] = field(default_factory=dict)
    dedup: dict[str, Any] = field(default_factory=dict)
    """The contract's ``[dedup]`` this file was de-duplicated under: ``mode`` and ``key``."""

    @property
    def balanced(self) -> bool:
        """Nothing lost, nothing doubled: every row read is valid, rejected or a duplicate."""
        return self.rows_read == self.rows_valid + self.rows_rejected + self.rows_duplicate


@dataclass
class HeaderMap:
    """How the file's header lines up with the contract."""

    positions: dict[str, int | None]  # contract column -> header position (None: absent, optional)
    extra: list[tuple[int, str]]  # header positions and names the contract does not know
    drift: dict[str, Any]


def map_header(contract: Contract, header: Sequence[str]) -> HeaderMap:
    """Match header names to contract columns ignoring case, spaces and a BOM; apply drift policy."""
    names = [normalise_header(h) for h in header]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n and n in seen:
            raise FileRefused(
                "unexpected_columns", f"the header names {header[i].strip()!r} twice (columns {seen[n] + 1} and {i + 1})"
            )
        seen.setdefault(n, i)
    positions: dict[str, int | None] = {}
    missing_required, missing_optional = [], []
    for col in contract.columns:
        pos = seen.get(normalise_header(col.source))
        positions[col.name] = pos
        if pos is None:
            (missing_required if col.required else missing_optional).append(col.source)
    if missing_required:
        raise FileRefused("missing_columns", f"required column(s) missing from the header: {', '.join(missing_required)}")
    if missing_optional and contract.drift.missing_optional == "reject_file":
        raise FileRefused(
            "missing_columns", f"optional column(s) missing and the contract refuses that: {', '.join(missing_optional)}"
        )
    known = {p for p in positions.values() if p is not None}
    extra = [(i, header[i].strip()) for i in range(len(header)) if i not in known and names[i]]
    if extra and contract.drift.extra_columns == "reject_file":
        raise FileRefused("unexpected_columns", f"column(s) not in the contract: {', '.join(n for _, n in extra)}")
    expected_order = sorted(known)
    drift: dict[str, Any] = {
        "extra_columns": [n for _, n in extra],
        "extra_columns_policy": contract.drift.extra_columns,
        "missing_optional_columns": missing_optional,
        "column_order_changed": [p for p in positions.values() if p is not None] != expected_order,
        "unnamed_columns": sum(1 for n in names if not n),
    }
    return HeaderMap(positions=positions, extra=extra, drift=drift)


def kept_name(name: str, taken: set[str]) -> str:
    """A safe column name for an extra column kept under the ``keep`` policy."""
    base = re.sub(r"[^a-z0-9_]+", "_", normalise_header(name)).strip("_") or "column"
    if not base[0].isalpha():
        base = f"c_{base}"
    base = f"extra_{base}"[:60]
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate)
    return candidate


def run(
    contract: Contract,
    source: Source,
    out_dir: Path,
    lineage: Lineage,
    *,
    zstd_level: int = 1,
    range_rows: int = RANGE_ROWS,
    spill_memory: int = SPILL_MEMORY,
    dictionary_cap: int = dictionary.DEFAULT_CAP,
) -> Result:
    """Clean, reject, de-duplicate and aggregate ``source`` into Parquet files under ``out_dir``."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = _Plan(contract, source, mapping=map_header(contract, source.header), dictionary_cap=dictionary_cap)
    meta = lineage.metadata(contract)
    spill = dedup.Spill(out_dir / "spill", spill_memory)
    rejects = _Rejects(plan, out_dir, lineage, meta, zstd_level)
    totals = _pass1(plan, source, spill, rejects)
    rows_read = totals.get("read", 0)
    _refuse_type_drift(contract, totals, rows_read)
    outputs = Outputs(clean=out_dir / "clean", rejects=rejects.finish(), aggregates={})
    duplicates = _Pass2(plan, spill, outputs, lineage, meta, zstd_level).run(range_rows)
    groups = _write_aggregates(plan, out_dir, lineage, meta, outputs)
    rows_valid = spill.rows - duplicates
    result = Result(
        rows_read=rows_read,
        rows_valid=rows_valid,
        rows_rejected=rows_read - spill.rows,
        rows_duplicate=duplicates,
        groups=groups,
        rejects_by_reason=rejects.by_reason(),
        columns=_stats_dict(contract, plan.stats.row(), rows_valid),
        drift=plan.mapping.drift,
        outputs=outputs,
        seconds=time.perf_counter() - started,
        notes={
            "dictionary_columns": sorted(c for c, d in plan.dictionaries.items() if d.active),
            "spilled_to_disk_bytes": spill.on_disk,
        },
        dedup={"mode": contract.dedup_mode, "key": list(contract.dedup_key)},
    )
    if not result.balanced:  # pragma: no cover - a bug, never a data problem
        raise AssertionError(f"row accounting is off: {result}")
    return result


def _pass1(plan: _Plan, source: Source, spill: dedup.Spill, rejects: _Rejects) -> dict[str, int]:
    """Parse and check every segment; valid rows to the spill, the rest to rejects. Returns the
    counts (rows read, and per column values present and values invalid, for type drift).

    One segment is parsed at a time: polars already keeps both cores busy within a segment
    (two segments in two threads measured no faster, and 40 MiB larger). A helper thread
    commits segment k (orders its rows by bucket into the spill, writes its rejects) while
    this one parses and cleans segment k + 1: 3.5% faster on 10M rows."""
    totals: dict[str, int] = {}
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit") as helper:
            committed: Future[None] | None = None
            segments = source.segments()
            while (segment := next(segments, None)) is not None:
                if not plan.chosen:
                    plan.choose_dictionaries(segment)
                box = [segment]
                del segment  # the plan lets go of the text once it is parsed
                checked = plan.check(box)
                if committed is not None:
                    committed.result()  # commits stay in file order, one at a time
                committed = helper.submit(plan.commit, checked, spill, rejects, totals)
                del checked
            if committed is not None:
                committed.result()
    except pl.exceptions.ComputeError as exc:
        if "utf-8" in str(exc).lower() or "utf8" in str(exc).lower():
            raise FileRefused(
                "undecodable", "the file is not valid UTF-8; set [csv] encoding in the contract if the feed uses another one"
            ) from None
        raise
    return totals


def _write_aggregates(plan: _Plan, out_dir: Path, lineage: Lineage, meta: dict[str, str], outputs: Outputs) -> dict[str, int]:
    """Each aggregate's merged partials (and its distinct-value side files) as Parquet; the
    number of groups per aggregate."""
    groups: dict[str, int] = {}
    for agg, partials in plan.aggregates:
        df, distinct = partials.result()
        path = out_dir / f"aggregate-{agg.name}.parquet"
        df.with_columns(lineage.columns()).write_parquet(path, compression="zstd", metadata=meta)
        outputs.aggregates[agg.name] = path
        groups[agg.name] = df.height
        for name, values in distinct.items():
            path = out_dir / f"distinct-{name}.parquet"
            values.with_columns(lineage.columns()).write_parquet(path, compression="zstd", metadata=meta)
            outputs.distinct_values[name] = path
    return groups


@dataclass
class _Checked:
    """One segment, parsed and cleaned, its lines numbered from 0."""

    rows: int
    lines: int  # physical lines: more than rows when quoted fields hold line ends
    valid: pl.DataFrame | None
    rejected: pl.DataFrame | None
    dictionaries: dict[str, dictionary.Dictionary]
    counts: dict[str, int]


class _Plan:
    """The per-file expressions: which raw column feeds which contract column, and how."""

    def __init__(self, contract: Contract, source: Source, mapping: HeaderMap, dictionary_cap: int) -> None:
        self.contract, self.source, self.mapping = contract, source, mapping
        self.raw_names = [f"__f{i}" for i in range(len(source.header))]
        self.raw_of: dict[str, str] = {}
        self.rules: dict[str, ColumnRules] = {}
        for col in contract.columns:
            pos = mapping.positions[col.name]
            self.raw_of[col.name] = self.raw_names[pos] if pos is not None else ABSENT
            self.rules[col.name] = column_rules(col, self.raw_of[col.name])
        keep_extra = contract.drift.extra_columns == "keep"
        taken = {c.name for c in contract.columns}
        self.kept = [(self.raw_names[i], kept_name(n, taken)) for i, n in mapping.extra] if keep_extra else []
        self.names = [c.name for c in contract.columns]
        self.dedup = list(contract.dedup_columns)
        self.dictionary_cap = dictionary_cap
        self.dictionaries: dict[str, dictionary.Dictionary] = {}
        self.chosen = False
        self._lock = threading.Lock()
        self.line = 2  # the header is line 1; a record's line is its number in the file
        self.schema: dict[str, pl.DataType] = {LINE: pl.UInt32(), **output_dtypes(contract)}
        self.schema |= {n: pl.String() for _, n in self.kept}
        self.stats = ColumnStats(contract)
        self.aggregates = [(agg, AggregatePartials(agg, contract)) for agg in contract.aggregates]

    # --- pass 1 -------------------------------------------------------------------------

    def choose_dictionaries(self, segment: bytes) -> None:
        """Which columns repeat enough to be cleaned per distinct text (from the first rows)."""
        self.chosen = True
        sample = self._scan(segment, {}, n_rows=dictionary.SAMPLE_ROWS).collect()
        used = {self.raw_of[c.name]: c for c in self.contract.columns if self.raw_of[c.name] != ABSENT}
        if not sample.height:
            return
        distinct = sample.select(pl.col(raw).n_unique() for raw in used).row(0)
        for (raw, col), n in zip(used.items(), distinct, strict=True):
            if dictionary.worth_it(n, sample.height):
                self.dictionaries[col.name] = dictionary.Dictionary(col, raw, SEED, self.dictionary_cap)

    def _active(self) -> dict[str, dictionary.Dictionary]:
        return {name: d for name, d in self.dictionaries.items() if d.active}

    def _scan(self, segment: bytes, dictionaries: dict[str, dictionary.Dictionary], n_rows: int | None = None) -> pl.LazyFrame:
        schema: dict[str, Any] = dict.fromkeys([*self.raw_names, EXTRA], pl.String)
        for d in dictionaries.values():
            schema[d.raw] = d.dtype
        src = self.source
        return pl.scan_csv(
            segment,
            has_header=False,
            separator=src.delimiter,
            quote_char=src.quote,
            eol_char=src.eol,
            schema=schema,
            missing_columns="insert",
            truncate_ragged_lines=True,  # surplus fields: the first one in EXTRA, the rest dropped
            extra_columns="ignore",  # (also when the segment's first row has them)
            raise_if_empty=False,
            encoding="utf8",
            n_rows=n_rows,
        )

    def key_hash(self, slot: dict[str, pl.Expr], tables: dict[str, pl.DataFrame] | None = None) -> pl.Expr:
        """A 64-bit hash of a row's de-duplication key, from its typed values or, for a column
        read through its dictionary, from the slot (``slot[name]``, looked up in ``tables``,
        by default the dictionaries' current ones): the same either way."""
        tables = tables if tables is not None else {n: d.table for n, d in self.dictionaries.items()}
        parts = [
            pl.lit(tables[n]["hash"]).gather(slot[n]) if n in slot else dictionary.value_hash(pl.col(n), SEED) for n in self.dedup
        ]
        # a linear combination with odd 64-bit multipliers (wrapping): each part is already a
        # well-mixed 64-bit hash, and this is 10% cheaper than hashing a struct of them
        combined = parts[0] * pl.lit(MIX[0], pl.UInt64)
        for i, part in enumerate(parts[1:], start=1):
            combined = combined + part * pl.lit(MIX[i % len(MIX)] + 2 * i, pl.UInt64)
        return combined

    def _records(self, segment: bytes, census: records.Census, raw: pl.DataFrame) -> tuple[list[pl.Series | pl.Expr], int]:
        """RAGGED: whether each row has fewer fields than the header, or more (past one trailing
        empty field); and LINE (from 0) where a record spans lines.

        A row has at least the fields up to its last non-null one (polars reads a missing field
        and an empty one alike, as null). When the segment's delimiters outside quotes add up to
        exactly that many fields, every row has exactly that many, so a row whose last column is
        null is short. When they do not (an empty last field, a field past the first surplus one,
        or too much quoted to count cheaply), ``shared.core.records`` counts each row's fields. A
        record spans lines only when a quoted field holds a line end; then ``shared.core.records``
        also finds the line each one starts on. Returns the columns and the segment's lines."""
        n = len(self.raw_names)
        extra, last = pl.col(EXTRA), pl.col(self.raw_names[-1])
        by_totals = (extra.is_not_null() | (last.is_null() if n > 1 else pl.lit(False))).alias(RAGGED)
        exact_lines = census.quoted_line_ends != 0
        exact_fields = census.delimiters is None
        if not exact_fields:
            unseen = extra.is_null() & last.is_null()  # rows whose last visible field is unknown
            surplus, full, some = raw.select(
                extra.is_not_null().sum().alias("surplus"),
                (extra.is_null() & last.is_not_null()).sum().alias("full"),
                unseen.sum().alias("unseen"),
            ).row(0)
            seen = surplus * n + full * (n - 1)  # delimiters the rows visibly have
            if some and n > 1:
                rest = raw.select(pl.col(c).filter(unseen) for c in self.raw_names[:-1])
                visible = pl.max_horizontal(pl.when(pl.col(c).is_not_null()).then(i) for i, c in enumerate(rest.columns))
                seen += int(rest.select(visible.fill_null(0).sum()).item() or 0)
            exact_fields = seen != census.delimiters
        if not (exact_lines or exact_fields):
            return [by_totals], raw.height
        src = self.source
        lines, first_line, fields = records.layout(segment, src.delimiter, src.quote, src.eol, census.quotes, fields=exact_fields)
        if len(first_line) != raw.height:
            raise FileRefused("not_csv", "quote characters inside unquoted fields make the records ambiguous")
        columns: list[pl.Series | pl.Expr] = []
        if exact_lines:
            columns.append(pl.Series(LINE, first_line, pl.UInt32))
        if fields is None:
            columns.append(by_totals)
        else:  # n + 1 fields with the last one empty are fine: EXTRA is null then
            count = pl.lit(pl.Series("fields", fields))
            columns.append((extra.is_not_null() | ~count.is_between(n, n + 1)).alias(RAGGED))
        return columns, lines

    def check(self, box: list[bytes]) -> _Checked:
        """Parse and clean one segment (handed over in ``box``, emptied once it is parsed and
        its records counted). Safe to run in two threads at once; line numbers count from 0
        here and are placed by ``commit``."""
        dictionaries = self._active()
        segment = box.pop()
        src = self.source
        census = records.census(segment, src.delimiter, src.quote, src.eol)
        raw = self._scan(segment, dictionaries).with_row_index(LINE).with_columns(pl.lit(None, pl.String).alias(ABSENT)).collect()
        if not raw.height:
            return _Checked(0, 0, None, None, dictionaries, {})
        columns, lines = self._records(segment, census, raw)
        raw = raw.with_columns(columns)
        del segment
        with self._lock:  # one refresh at a time; each sees at least the texts of its own parse
            for d in dictionaries.values():
                d.refresh()  # a column past its cap is still read by its dictionary in this segment
            tables = {n: d.table for n, d in dictionaries.items()}

        direct = [c for c in self.contract.columns if c.name not in dictionaries]
        slots = {name: d.slot() for name, d in dictionaries.items()}

        def lookup_(name: str, field: str) -> pl.Expr:
            return pl.lit(tables[name][field]).gather(slots[name])

        ok = [self.rules[c.name].ok for c in direct] + [lookup_(n, "ok") for n in dictionaries]
        flags = []  # for the type-drift check: values present, and present but not parsable
        for c in direct:
            if c.type != "string":
                cleaned = pl.col(cleaned_name(c))
                invalid, present = cleaned.is_not_null() & pl.col(c.name).is_null(), cleaned.is_not_null()
                flags += [invalid.alias(f"invalid:{c.name}"), present.alias(f"present:{c.name}")]
        checked = (
            raw.lazy()
            .with_columns([self.rules[c.name].cleaned for c in direct])
            .with_columns([self.rules[c.name].value for c in direct])
            .select(
                LINE,
                (~pl.col(RAGGED) & pl.all_horizontal(ok)).alias(OK),
                *[_narrow(slots[n], tables[n].height).alias(n) if n in dictionaries else pl.col(n) for n in self.names],
                *[pl.col(r).alias(n) for r, n in self.kept],
                dedup.bucket_of(self.key_hash(slots, tables)),
                *flags,
            )
            .collect()
        )
        counts = checked.select(pl.len().alias("read"), *[pl.col(f.meta.output_name()).sum() for f in flags]).row(0, named=True)
        for n, d in dictionaries.items():  # the same counts per slot, from how often each occurs
            if d.column.type != "string":
                per_slot = np.bincount(checked[n].to_numpy(), minlength=tables[n].height)
                counts[f"invalid:{n}"] = int(per_slot @ tables[n]["invalid"].to_numpy())
                counts[f"present:{n}"] = int(per_slot @ tables[n]["present"].to_numpy())
        valid = checked.filter(OK).select(LINE, *self.names, *[n for _, n in self.kept], dedup.BUCKET)
        valid = _narrow_integers(valid, [c.name for c in direct if c.type == "integer"])
        rejected = raw.filter(~checked[OK]) if valid.height < raw.height else None
        counts = {k: int(v or 0) for k, v in counts.items()}
        return _Checked(raw.height, lines, valid, rejected, dictionaries, counts)

    def commit(self, checked: _Checked, spill: dedup.Spill, rejects: _Rejects, totals: dict[str, int]) -> None:
        """Number a checked segment's lines (segments are committed in file order) and hand
        its rows on: valid to the spill, the rest to rejects."""
        base = pl.lit(self.line, pl.UInt32)
        self.line += checked.lines
        for k, v in checked.counts.items():
            totals[k] = totals.get(k, 0) + v
        if checked.valid is not None:
            spill.add(checked.valid.with_columns(pl.col(LINE) + base), tag=frozenset(checked.dictionaries))
        if checked.rejected is not None:
            rejects.add(checked.rejected.with_columns(pl.col(LINE) + base), checked.dictionaries)

    # --- pass 2 -------------------------------------------------------------------------

    def pass2_rows(self, frame: pl.DataFrame, coded: frozenset[str], slotted: frozenset[str]) -> pl.DataFrame:
        """A spilled piece as pass 2 works on it: the key hash, and each column either as its
        dictionary slot (``SLOT + name``, for the columns every piece carries as slots:
        ``slotted``) or as its value, still in the narrow type it was spilled in (``typed``
        gives the output type)."""
        columns = []
        for n in self.names:
            if n in slotted:
                columns.append(pl.col(n).alias(SLOT + n))
            elif n in coded:
                columns.append(self.dictionaries[n].decode(pl.col(n)))
            else:
                columns.append(pl.col(n))
        key_hash = self.key_hash({n: pl.col(n) for n in coded}).alias(dedup.HASH)
        return frame.select(pl.col(LINE), *columns, *[pl.col(n) for _, n in self.kept], key_hash)

    def typed(self, name: str, slotted: frozenset[str]) -> pl.Expr:
        """A column's value in its output type, in pass 2."""
        if name in slotted:
            return self.dictionaries[name].decode(pl.col(SLOT + name))
        return pl.col(name).cast(self.schema[name])

    def empty(self) -> pl.DataFrame:
        """No clean rows, with the clean rows' columns."""
        return pl.DataFrame(schema=self.schema)

    def empty_raw(self) -> pl.DataFrame:
        """No raw rows, with the parsed columns."""
        strings = dict.fromkeys([*self.raw_names, EXTRA, ABSENT], pl.String)
        return pl.DataFrame(schema={LINE: pl.UInt32, **strings, RAGGED: pl.Boolean})


def _narrow(slot: pl.Expr, size: int) -> pl.Expr:
    """A dictionary slot in the smallest unsigned type that holds ``size`` slots."""
    return slot.cast(pl.UInt8 if size <= 1 << 8 else pl.UInt16 if size <= 1 << 16 else pl.UInt32)


def _narrow_integers(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Integer columns in the smallest type that holds this frame's values: spilled rows of the
    bank contract take 16 bytes instead of 34 (pass 2 casts them back)."""
    if not columns or frame.is_empty():
        return frame
    bounds = frame.select(
        *[pl.col(c).min().alias(f"lo:{c}") for c in columns], *[pl.col(c).max().alias(f"hi:{c}") for c in columns]
    )
    row = bounds.row(0, named=True)
    casts = []
    for c in columns:
        lo, hi = row[f"lo:{c}"], row[f"hi:{c}"]
        if lo is None:
            continue
        for dtype, bits in ((pl.Int8, 7), (pl.Int16, 15), (pl.Int32, 31)):
            if -(1 << bits) <= lo and hi < (1 << bits):
                casts.append(pl.col(c).cast(dtype))
                break
    return frame.with_columns(casts) if casts else frame


class _Rejects:
    """Refused rows of every segment, explained, gathered into one rejects.parquet."""

    def __init__(self, plan: _Plan, out_dir: Path, lineage: Lineage, meta: dict[str, str], zstd_level: int) -> None:
        self.plan, self.out_dir, self.lineage, self.meta, self.zstd_level = plan, out_dir, lineage, meta, zstd_level
        self.parts: list[Path] = []
        self.reasons: dict[tuple[str, str | None], int] = {}

    def explain(self, raw: pl.LazyFrame) -> pl.LazyFrame:
        """Line, the first broken rule and its column, and the raw text of every column."""
        plan, contract = self.plan, self.plan.contract
        ragged = pl.col(RAGGED)
        reason = pl.when(ragged).then(pl.lit(RAGGED_ROW))
        column = pl.when(ragged).then(pl.lit(None, pl.String))
        for col in contract.columns:
            ok = plan.rules[col.name].ok
            reason = reason.when(~ok).then(plan.rules[col.name].reason)
            column = column.when(~ok).then(pl.lit(col.name))
        raw_text = [
            (pl.col(plan.raw_of[c.name]) if plan.raw_of[c.name] != ABSENT else pl.lit(None, pl.String)).alias(c.name)
            for c in contract.columns
        ]
        return (
            raw.with_columns([plan.rules[c.name].cleaned for c in contract.columns])
            .with_columns([plan.rules[c.name].value for c in contract.columns])
            .select(
                pl.col(LINE).alias("line"),
                reason.alias("reason"),
                column.otherwise(pl.lit(None, pl.String)).alias("column"),
                *raw_text,
                *[pl.col(r).alias(n) for r, n in plan.kept],
                pl.col(EXTRA).alias("extra_fields"),
                *self.lineage.columns(),
            )
        )

    def add(self, raw: pl.DataFrame, dictionaries: dict[str, dictionary.Dictionary]) -> None:
        as_text = raw.with_columns(pl.col(d.raw).cast(pl.String) for d in dictionaries.values())
        rows = self.explain(as_text.lazy()).collect()
        for reason, column, n in rows.group_by("reason", "column").len().iter_rows():
            self.reasons[(reason, column)] = self.reasons.get((reason, column), 0) + n
        path = self.out_dir / f"rejects-{len(self.parts):05d}.parquet"
        rows.write_parquet(path, compression="lz4", statistics=False)
        self.parts.append(path)

    def finish(self) -> Path:
        """Gather the segments' rejects into one file (a file with no rejects gets an empty one)."""
        path = self.out_dir / "rejects.parquet"
        rows = pl.scan_parquet(self.parts) if self.parts else self.explain(self.plan.empty_raw().lazy())
        rows.sink_parquet(path, compression="zstd", compression_level=self.zstd_level, metadata=self.meta)
        for p in self.parts:
            p.unlink()
        return path

    def by_reason(self) -> list[dict[str, Any]]:
        rows = [{"reason": r, "column": c, "rows": n} for (r, c), n in self.reasons.items()]
        return sorted(rows, key=lambda r: (-r["rows"], r["reason"], r["column"] is None, r["column"] or ""))


_RangeDone = tuple[int, pl.DataFrame, list[tuple[list[pl.DataFrame], Any]]]
"""What one range of pass 2 yields: duplicates dropped, its column statistics, its partials."""


class _Pass2:
    """De-duplicate each range of buckets, write its clean part, fold its aggregates in.

    Two ranges are processed at a time (polars runs without the GIL, so two Python threads keep
    both cores busy); their partials are folded in range order."""

    def __init__(
        self, plan: _Plan, spill: dedup.Spill, outputs: Outputs, lineage: Lineage, meta: dict[str, str], zstd_level: int
    ) -> None:
        self.plan, self.spill, self.outputs, self.lineage, self.meta = plan, spill, outputs, lineage, meta
        self.zstd_level = zstd_level
        self.folder = outputs.clean
        tags = [frozenset(p.tag) for p in spill.pieces]  # type: ignore[arg-type]
        self.slotted = frozenset.intersection(*tags) if tags else frozenset()
        """Columns that every spilled piece carries as dictionary slots: pass 2 works on slots."""
        self.names = [LINE, *plan.names, *[n for _, n in plan.kept]]
        self.duplicates = 0

    def run(self, range_rows: int) -> int:
        """Every range, in pairs: the even one in this thread, the odd one in a helper. This
        thread did pass 1, and its allocator arena holds the memory pass 1 let go of; a second
        helper thread would bring an arena of its own (measured: 30-50 MiB more at the peak)."""
        plan = self.plan
        self.folder.mkdir(parents=True, exist_ok=True)
        slots = {n: d.table["value"] for n, d in plan.dictionaries.items() if n in self.slotted}
        for _, aggregate in plan.aggregates:
            aggregate.use_slots(slots)
        plan.stats.use_slots(slots)
        ranges = self.spill.ranges(range_rows)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pass2") as helper:
            for i in range(0, len(ranges), 2):
                odd = helper.submit(self.one, i + 1) if i + 1 < len(ranges) and PASS2_THREADS > 1 else None
                self.fold(i, self.one(i))
                if odd is not None:
                    self.fold(i + 1, odd.result())
                elif i + 1 < len(ranges):
                    self.fold(i + 1, self.one(i + 1))
        return self.duplicates

    def rows(self, i: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Range ``i``'s rows, and the first occurrence of each de-duplication key among them."""
        plan, slotted = self.plan, self.slotted
        pieces = [plan.pass2_rows(frame, tag, slotted) for frame, tag in _runs(self.spill.read(i))]  # type: ignore[arg-type]
        if not pieces:
            empty = plan.empty().select(
                pl.col(LINE), *[pl.lit(None, pl.UInt32).alias(SLOT + n) if n in slotted else pl.col(n) for n in plan.names]
            )
            return empty, empty
        rows = pl.concat(pieces, how="vertical_relaxed")  # narrow types differ between pieces
        if not plan.contract.deduplicates:
            return rows, rows  # [dedup] mode = "none": repeats are rows of their own
        return rows, rows.filter(dedup.first_occurrence(rows, [plan.typed(n, slotted) for n in plan.dedup]))

    def one(self, i: int) -> _RangeDone:
        """Write range ``i``'s clean part, and compute its statistics and partial aggregates, in
        one polars plan per output collected together."""
        plan = self.plan
        rows, clean = self.rows(i)
        typed = clean.lazy().with_columns(plan.typed(n, self.slotted) for n in plan.names)
        # ``_line`` is counted in UInt32 and written signed: Spark, Synapse and Delta have no unsigned types.
        part = typed.select(self.names).with_columns(pl.col(LINE).cast(pl.Int64), *self.lineage.columns())
        partials = [aggregate.partial(typed, clean.height) for _, aggregate in plan.aggregates]
        plans = [
            part.sink_parquet(
                self.part_path(i), compression="zstd", compression_level=self.zstd_level, metadata=self.meta, lazy=True
            ),
            plan.stats.partial(typed, clean),
            *[p for aggregate_plans, _ in partials for p in aggregate_plans],
        ]
        frames = pl.collect_all(plans)[1:]
        at, folds = 1, []
        for aggregate_plans, arrays in partials:
            folds.append((frames[at : at + len(aggregate_plans)], arrays))
            at += len(aggregate_plans)
        return rows.height - clean.height, frames[0], folds

    def fold(self, i: int, done: _RangeDone) -> None:
        """Merge range ``i``'s results into the file's (in range order)."""
        dropped, stats, folds = done
        self.duplicates += dropped
        self.outputs.clean_parts.append(self.part_path(i))
        self.plan.stats.fold(stats)
        for (_, aggregate), (frames, arrays) in zip(self.plan.aggregates, folds, strict=True):
            aggregate.fold(frames, arrays)

    def part_path(self, i: int) -> Path:
        return self.folder / f"part-{i:05d}.parquet"


def _runs(pieces: Iterator[tuple[pl.DataFrame, object]]) -> Iterator[tuple[pl.DataFrame, object]]:
    """Consecutive pieces with the same tag, concatenated (in order): one ``pass2_rows`` call
    per run instead of one per piece (57 pieces x 101 ranges cost 3.6 s at 50M rows)."""
    run: list[pl.DataFrame] = []
    tag: object = None
    for frame, t in pieces:
        if run and t != tag:
            yield pl.concat(run, how="vertical_relaxed"), tag
            run = []
        run.append(frame)
        tag = t
    if run:
        yield pl.concat(run, how="vertical_relaxed"), tag


def _refuse_type_drift(contract: Contract, totals: dict[str, int], rows_read: int) -> None:
    """A column whose values mostly stop parsing means the feed changed: refuse the whole file
    rather than load a file's worth of rejects in place of its previous contribution."""
    limit = contract.drift.max_invalid_share
    for col in contract.columns:
        if col.type == "string":
            continue
        bad = totals.get(f"invalid:{col.name}", 0)
        present = totals.get(f"present:{col.name}", 0)
        if present >= 20 and bad > limit * present:
            raise FileRefused(
                "type_drift",
                f"{bad} of {present} values of {col.source!r} are not a valid {col.type} "
                f"({INVALID_CODE[col.type]}); the contract allows at most {limit:.0%}",
                rows_read=rows_read,
            )


def _stats_dict(contract: Contract, row: dict[str, Any], rows: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for col in contract.columns:
        nulls = int(row.get(f"nulls:{col.name}") or 0)
        entry: dict[str, Any] = {
            "type": col.type if col.type != "decimal" else f"decimal({col.scale})",
            "nulls": nulls,
            "null_rate": round(nulls / rows, 6) if rows else 0.0,
        }
        if col.type != "boolean":
            entry["min"] = _jsonable(row.get(f"min:{col.name}"))
            entry["max"] = _jsonable(row.get(f"max:{col.name}"))
        out[col.name] = entry
    return out


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value) if not hasattr(value, "isoformat") else value.isoformat()


def output_dtypes(contract: Contract) -> dict[str, pl.DataType]:
    return {c.name: dtype_of(c) for c in contract.columns}
