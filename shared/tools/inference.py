"""Draft a contract from a sample file: types, formats, nullability, allowed values, keys.

The draft is a starting point for a person, not a contract to trust: every proposal that is a
guess says so in a comment, with what the sample showed. The sample is bounded (the first
``sample_bytes`` of the file, decompressed) and read the way the pipeline reads files
(``source.split``: gzip, encodings, BOM, NUL bytes, line ends, delimiter detection), then
every question is a vectorised polars expression over the sampled column.

Where a guess could lose data, the draft takes the safe side: numbers written with a leading
zero stay strings; an allowed list or pattern that would reject a sampled value is offered
commented out, with how many; the example aggregate sums no identifier-like column.

The ``infer`` command loads the rendered TOML with ``load_contract`` (``validate``) before it
prints or writes it, so a draft always loads; ``check`` then shows what the draft would reject
in the whole file.
"""

from __future__ import annotations

import json
import re
import tempfile
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import polars as pl

from shared.core import source
from shared.core.contract import DEFAULT_FALSE, DEFAULT_TRUE, load_contract, normalise_header
from shared.core.errors import FileRefused

SAMPLE_BYTES = 8 * 1024 * 1024
SAMPLE_ROWS = 50_000
ALLOWED_MAX = 20  # a string with at most this many distinct values gets an allowed list
KEY_COLUMNS = 8  # column pairs are tried as keys among the first this many candidates

NULL_TOKENS = ("NA", "N/A", "n/a", "NULL", "null", "None", "none", "#N/A", "nan", "NaN", "-", "?")
DATE_FORMATS = (
    "%Y-%m-%d", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y", "%m-%d-%Y",
    "%d %b %Y", "%b %d, %Y", "%d-%b-%Y", "%Y%m%d",
)  # fmt: skip
TIMESTAMP_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
    "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M",
)  # fmt: skip
COVERAGE = 0.95  # a type is proposed when at least this share of the sampled values fit it

INTEGER = r"^[+-]?\d+$"
DECIMAL = r"^[+-]?(?:\d+\.?\d*|\.\d+)$"
LEADING_ZERO = r"^[+-]?0\d"  # 02134, 007, -05, 00.5; not 0, 0.5 or -0.25
NUMBERS = ("integer", "decimal", "float")
WHOLE = r"^[+-]?\d+(?:\.0*)?$"

# A number column is not a quantity to sum when its header's last word is one of these
# (CustomerID, zip_code, Account No, fips); labels of the calendar or the map neither.
ID_WORDS = frozenset((
    "id", "ids", "uuid", "guid", "key", "code", "fips", "zip", "zipcode", "postcode", "postalcode",
    "number", "num", "nbr", "nr", "no",
))  # fmt: skip
ID_ENDINGS = ("code", "number")  # also glued to the word before: barcode, phonenumber (not "id": paid, valid)
LABEL_WORDS = frozenset(("year", "month", "week", "day", "quarter", "hour", "lat", "latitude", "lon", "lng", "longitude"))
UNIQUE_ROWS = 100  # whole numbers all distinct in at least this many values look like an identifier


@dataclass
class Misfit:
    """The sampled values a proposed rule would reject: how many, and the first few."""

    count: int
    examples: list[str]


@dataclass
class ColumnDraft:
    """What the sample says about one column, and the rules proposed for it.

    ``allowed`` and ``pattern`` are proposals; one listed in ``misfits`` would reject values the
    sample itself holds, and is rendered commented out with the count, never as a rule."""

    header: str
    name: str
    type: str = "string"
    required: bool = True
    formats: list[str] = field(default_factory=list)
    scale: int | None = None
    timezone: str | None = None
    case: str | None = None
    allowed: list[str] = field(default_factory=list)
    pattern: str | None = None
    sampled: int = 0  # non-empty values in the sample
    misfits: dict[str, Misfit] = field(default_factory=dict)  # "allowed" / "pattern": what it would reject
    not_a_measure: str | None = None  # why a number column is never summed in the example aggregate
    notes: list[str] = field(default_factory=list)  # comments above the column: what was guessed and why


@dataclass
class Draft:
    dataset: str
    file: str
    delimiter: str
    encoding: str
    rows: int
    truncated: bool
    null_tokens: list[str]
    columns: list[ColumnDraft]
    keys: list[list[str]]
    near_keys: list[tuple[str, float]] = field(default_factory=list)
    unnamed: int = 0
    repeated_rows: int = 0
    """Sampled lines that repeat an earlier line exactly (after trimming)."""

    def toml(self) -> str:
        return render(self)


# --- reading a bounded sample ------------------------------------------------------------------


def _bounded(blocks: Iterable[bytes], limit: int) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of the file, gunzipped if it is gzip; and whether it was cut."""
    out = bytearray()
    inflater: zlib._Decompress | None = None
    stream: Iterator[bytes] = iter(blocks)
    for block in stream:
        if inflater is None and not out and block[:2] == source.GZIP_MAGIC:
            inflater = zlib.decompressobj(wbits=47)
        if inflater is not None:
            try:
                out += inflater.decompress(block, limit + 1 - len(out))
            except zlib.error as exc:
                raise FileRefused("undecodable", f"the gzip stream is corrupt: {exc}") from None
        else:
            out += block
        if len(out) > limit:
            return bytes(out[:limit]), True
        if inflater is not None and inflater.eof:
            break
    return bytes(out), False


def _cut_at_record(data: bytes) -> bytes:
    """Drop the partial last line of a cut sample (LF, CRLF or CR; UTF-16 stays two-byte aligned)."""
    end = max(data.rfind(b"\n"), data.rfind(b"\r"))
    if end < 0:
        return data
    cut = end + 1
    if cut % 2 and data.count(b"\x00", 0, 4096) > 1024:  # UTF-16: keep the "\n\x00" pair whole
        cut += 1
    return data[:cut]


def _trim_last_chunk(chunks: list[Path], quote: str | None, eol: str) -> None:
    """A cut sample can end inside a quoted field: cut the last chunk after the last line end
    that lies outside quotes (chunks are UTF-8 here, and always start outside quotes)."""
    if not chunks:
        return
    data = chunks[-1].read_bytes()
    end = len(data)
    while True:
        end = data.rfind(eol.encode(), 0, end)
        if end < 0 or not quote or data.count(quote.encode(), 0, end) % 2 == 0:
            break
    chunks[-1].write_bytes(data[: end + 1])  # empty when no record ends outside quotes


def read_sample(
    path: Path | str, *, sample_bytes: int = SAMPLE_BYTES, sample_rows: int = SAMPLE_ROWS
) -> tuple[source.Source, pl.DataFrame, bool]:
    """The file's header, dialect and first rows, every field as text (trimmed later)."""
    data, truncated = _bounded(source.file_blocks(path), sample_bytes)
    if truncated:
        data = _cut_at_record(data)
    with tempfile.TemporaryDirectory(prefix="infer-") as tmp:
        src = source.split([data], Path(tmp) / "chunks", delimiter=None, quote='"', encoding="auto")
        if truncated:
            _trim_last_chunk(src.chunks, src.quote, src.eol)
        names = [f"__f{i}" for i in range(len(src.header))]
        if not src.chunks:
            return src, pl.DataFrame(schema=dict.fromkeys(names, pl.String)), truncated
        frame = (
            pl.scan_csv(
                [str(p) for p in src.chunks],
                has_header=False,
                separator=src.delimiter,
                quote_char=src.quote,
                eol_char=src.eol,
                schema=dict.fromkeys(names, pl.String),
                missing_columns="insert",
                truncate_ragged_lines=True,
                extra_columns="ignore",  # surplus fields in a chunk's first row are not a schema
                raise_if_empty=False,
            )
            .head(sample_rows)
            .collect()
        )
    return src, frame, truncated or frame.height == sample_rows


# --- one column ----------------------------------------------------------------------------------


def identifier(header: str, taken: set[str]) -> str:
    """A contract column name for a header: lower case, PostgreSQL-safe, unique."""
    ascii_name = unicodedata.normalize("NFKD", source_name(header)).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "_", ascii_name.casefold()).strip("_") or "column"
    if not base[0].isalpha():
        base = f"c_{base}"
    base = base[:60]
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def source_name(header: str) -> str:
    return header.replace("\ufeff", "").strip()


def _share(ok: pl.Series, total: int) -> float:
    return int(ok.sum()) / total if total else 0.0


def _formats(values: pl.Series, candidates: tuple[str, ...], kind: str) -> tuple[list[str], int]:
    """The fewest formats (greedy) that read the most values; and how many no format reads."""
    parsed: dict[str, pl.Series] = {}
    for fmt in candidates:
        if kind == "date":
            got = values.str.to_date(fmt, strict=False)
            ok = got.is_not_null() & (got.dt.year() >= 1000)
        else:
            zone = "UTC" if re.search(r"%[zZ:]|%#z", fmt) else None
            got = values.str.to_datetime(fmt, time_unit="us", time_zone=zone, strict=False)
            ok = got.is_not_null() & (got.dt.year() >= 1000)
        if ok.any():
            parsed[fmt] = ok
    chosen: list[str] = []
    covered = pl.Series([False] * len(values))
    while parsed:
        best = max(parsed, key=lambda f: int((parsed[f] & ~covered).sum()))
        gain = int((parsed[best] & ~covered).sum())
        if gain == 0:
            break
        chosen.append(best)
        covered = covered | parsed.pop(best)
    return chosen, len(values) - int(covered.sum())


def _shape_pattern(values: pl.Series) -> str | None:
    """A pattern when (nearly) every value has one shape, e.g. T000000123 -> [A-Z]\\d{9}; else None."""
    shapes = values.str.replace_all(r"\d", "9").str.replace_all(r"[A-Z]", "A").str.replace_all(r"[a-z]", "a")
    shape, n = shapes.value_counts(sort=True).row(0)
    if n < COVERAGE * len(values) or not shape or len(shape) > 40 or not re.search(r"[9Aa]", shape):
        return None
    out = []
    for run in re.finditer(r"(.)\1*", shape):
        ch, k = run.group(1), len(run.group(0))
        piece = {"9": r"\d", "A": "[A-Z]", "a": "[a-z]"}.get(ch, re.escape(ch))
        out.append(piece + (f"{{{k}}}" if k > 1 else ""))
    return "".join(out)


def infer_column(header: str, name: str, raw: pl.Series, null_tokens: set[str]) -> ColumnDraft:
    """What the sampled values of one column say: required or not, a type, and the rules that fit."""
    col = ColumnDraft(header=source_name(header), name=name)
    text = raw.str.strip_chars()
    missing = text.is_null() | text.is_in(["", *null_tokens])
    values = text.filter(~missing)
    rows, n = len(raw), len(values)
    empties = rows - n
    col.required = empties == 0 and rows > 0
    col.notes.append(
        f"guess: required, no empty value in {rows:,} sampled rows"
        if col.required
        else f"guess: optional, {empties:,} of {rows:,} sampled rows empty"
    )
    if n == 0:
        col.notes.append("every sampled value is empty: the type is a guess")
        return col
    kind = _value_kind(values, n)
    if kind in NUMBERS and _keeps_leading_zeros(col, values, kind):
        _string_rules(col, values)
    elif kind == "integer":
        _integer(col, values)
    elif kind == "boolean":
        col.type = "boolean"
        col.notes.append(f"seen: {', '.join(sorted(values.unique().to_list())[:8])}")
    elif kind == "decimal":
        _decimal(col, values)
    elif kind == "float":
        col.type = "float"
    elif not _temporal(col, values, n):
        _string_rules(col, values)
    if col.type in NUMBERS:
        col.not_a_measure = _not_a_measure(col, values)
    bad = n - int(_fits(col, values).sum())
    if bad:
        col.notes.append(f"{bad:,} sampled value(s) do not fit and would be rejected, e.g. {_examples(col, values)}")
    return col


def _value_kind(values: pl.Series, n: int) -> str | None:
    """The number or boolean type (nearly) every value reads as, tried narrowest first; else None."""
    if _share(values.str.contains(INTEGER), n) >= COVERAGE:
        return "integer"
    if _share(values.str.to_lowercase().is_in([*DEFAULT_TRUE, *DEFAULT_FALSE]), n) >= COVERAGE:
        return "boolean"
    if _share(values.str.contains(DECIMAL), n) >= COVERAGE:
        return "decimal"
    if _share(values.cast(pl.Float64, strict=False).is_finite().fill_null(False), n) >= COVERAGE:
        return "float"
    return None


def _keeps_leading_zeros(col: ColumnDraft, values: pl.Series, kind: str) -> bool:
    """A number column written with leading zeros (ZIP, FIPS, account numbers) stays text: as a
    number ``02134`` would be stored as 2134, and the zero is gone for good; a string can still
    be cast later. ``0`` itself, ``0.5`` and ``-0.25`` have no leading zero; ``-07`` and ``00.5`` do."""
    padded = values.filter(values.str.contains(LEADING_ZERO))
    if padded.is_empty():
        return False
    noun = "integers" if kind == "integer" else "numbers"
    col.notes.append(
        f"guess: string, not {kind}: {len(padded):,} of {len(values):,} sampled values have a leading zero "
        f"(e.g. {', '.join(repr(v) for v in padded.unique(maintain_order=True).head(3).to_list())}); "
        f"as {noun} they would lose it"
    )
    return True


def header_words(header: str) -> list[str]:
    """A header's words, split at separators, digits and camelCase humps: CustomerID -> customer, id."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", header)
    return re.findall(r"[^\W\d_]+", spaced.casefold())


def _not_a_measure(col: ColumnDraft, values: pl.Series) -> str | None:
    """Why summing this number column would be meaningless (a sum of ZIP codes, of account
    numbers, of years), or None for what looks like a quantity. Names say it first; failing
    that, whole numbers that never repeat in enough rows are numbering something."""
    words = header_words(col.header)
    last = words[-1] if words else ""
    if col.header.endswith("#"):
        return "the name ends in '#'"
    if last in ID_WORDS or last.endswith(ID_ENDINGS):
        return f"the name ends in {last!r}"
    if last in LABEL_WORDS:
        return f"the name ends in {last!r}, a label rather than a quantity"
    read = values.filter(_fits(col, values))
    distinct = read.str.replace(r"\.0*$", "").str.strip_prefix("+").n_unique()  # exact, unlike a float: 12 = 12.0 = +12
    if len(read) >= UNIQUE_ROWS and distinct == len(read) and read.str.contains(WHOLE).all():
        return f"each of its {len(read):,} sampled values is a different whole number"
    return None


def _integer(col: ColumnDraft, values: pl.Series) -> None:
    as_int = values.cast(pl.Int64, strict=False)
    col.type = "integer"
    if set(values.unique().to_list()) <= {"0", "1"}:
        col.notes.append("only 0 and 1 seen: a boolean with true_values = ['1'] and false_values = ['0']?")
    col.notes.append(f"seen: {as_int.min()} … {as_int.max()}")


def _decimal(col: ColumnDraft, values: pl.Series) -> None:
    """An exact decimal with the most places seen as its scale; a float past 9 places."""
    places = values.str.extract(r"\.(\d*)$").str.len_chars().max() or 0
    if int(places) <= 9:  # type: ignore[arg-type]
        col.type, col.scale = "decimal", max(int(places), 0)  # type: ignore[arg-type]
        col.notes.append(f"guess: decimal with scale {col.scale}, the most places seen; a value with more is refused")
    else:
        col.type = "float"
    as_float = values.cast(pl.Float64, strict=False)
    low, high = as_float.arg_min(), as_float.arg_max()
    if low is not None and high is not None:
        col.notes.append(f"seen: {values[low]} … {values[high]}")


def _temporal(col: ColumnDraft, values: pl.Series, n: int) -> bool:
    """Type the column as a timestamp or a date when formats read (nearly) every value."""
    for kind, candidates in (("timestamp", TIMESTAMP_FORMATS), ("date", DATE_FORMATS)):
        formats, unread = _formats(values, candidates, kind)
        if formats and (n - unread) / n >= COVERAGE:
            col.type, col.formats = kind, formats
            if kind == "timestamp":
                zoned = [f for f in formats if re.search(r"%[zZ:]|%#z", f)]
                col.timezone = "UTC"
                col.notes.append(
                    "values carry their own UTC offset"
                    if len(zoned) == len(formats)
                    else "guess: naive times read as UTC; set timezone to the zone of the source's clock"
                )
            if any(f.startswith(("%m/%d", "%d/%m", "%m-%d", "%d-%m")) for f in formats):
                col.notes.append("guess: day and month order; check a date after the 12th of a month")
            return True
    return False


def _string_rules(col: ColumnDraft, values: pl.Series) -> None:
    """A string column's case rule, an allowed list when few values make up (nearly) the whole
    sample, a pattern when (nearly) every value has one shape; and what each would reject."""
    col.sampled = len(values)
    upper = values.str.to_uppercase()
    if upper.n_unique() < values.n_unique():
        col.case = "upper"
        col.notes.append("guess: the same value arrives in different cases; cleaned to upper case")
        values = upper
    _allowed(col, values)
    if values.n_unique() > ALLOWED_MAX:
        col.pattern = _shape_pattern(values)
    if col.allowed:
        _count_misfits(col, "allowed", values, values.is_in(col.allowed))
    if col.pattern:
        _count_misfits(col, "pattern", values, values.str.contains(f"^(?:{col.pattern})$"))  # as core/rules checks it
        share = "every sampled value" if "pattern" not in col.misfits else "most sampled values"
        col.notes.append(f"guess: the shape of {share}, letters as [A-Z] or [a-z], digits as \\d")


def _count_misfits(col: ColumnDraft, rule: str, values: pl.Series, fits: pl.Series) -> None:
    if not fits.all():
        col.misfits[rule] = Misfit(int((~fits).sum()), values.filter(~fits).unique(maintain_order=True).head(3).to_list())


def _allowed(col: ColumnDraft, values: pl.Series) -> None:
    """Every value seen, when there are few and each repeats; else the commonest few, when they
    cover (nearly) the whole sample: the rest are most likely misspellings, or a value to add."""
    n = len(values)
    if n < 20:
        return
    counts = values.rename("value").value_counts(name="n").sort(["n", "value"], descending=[True, False])
    if counts.height <= ALLOWED_MAX and n >= 2 * counts.height:
        col.allowed = sorted(counts["value"].to_list())
        col.notes.append(f"guess: the {counts.height} values seen in the sample; any other is rejected (not_allowed)")
        return
    common = counts.head(ALLOWED_MAX).filter(pl.col("n") >= 2)
    if int(common["n"].sum()) >= COVERAGE * n:
        col.allowed = sorted(common["value"].to_list())
        col.notes.append(
            f"guess: the {common.height} commonest of the {counts.height:,} values seen, "
            f"{int(common['n'].sum()) / n:.1%} of the sampled values"
        )


def _fits(col: ColumnDraft, values: pl.Series) -> pl.Series:
    """Which sampled values the column's type reads (the rules a draft can only propose aside)."""
    if col.type == "integer":
        return values.cast(pl.Int64, strict=False).is_not_null()
    if col.type == "decimal":
        return values.str.contains(DECIMAL) & (values.str.extract(r"\.(\d*)$").str.len_chars().fill_null(0) <= (col.scale or 0))
    if col.type == "float":
        return values.cast(pl.Float64, strict=False).is_finite().fill_null(False)
    if col.type == "boolean":
        return values.str.to_lowercase().is_in([*DEFAULT_TRUE, *DEFAULT_FALSE])
    if col.type in ("date", "timestamp"):
        ok = pl.Series([False] * len(values))
        for fmt in col.formats:
            got = (
                values.str.to_date(fmt, strict=False)
                if col.type == "date"
                else values.str.to_datetime(fmt, time_unit="us", time_zone="UTC" if "%z" in fmt else None, strict=False)
            )
            ok = ok | got.is_not_null()
        return ok
    return pl.Series([True] * len(values))  # a string: allowed and pattern count their own misfits


def _examples(col: ColumnDraft, values: pl.Series) -> str:
    return ", ".join(repr(v) for v in values.filter(~_fits(col, values)).unique(maintain_order=True).head(3).to_list())


# --- the whole file --------------------------------------------------------------------------------


def candidate_keys(frame: pl.DataFrame, columns: list[ColumnDraft]) -> tuple[list[list[str]], list[tuple[str, float]]]:
    """Columns (or pairs) with no empty value and no repeat in the sample; and, failing
    that, single columns that are nearly unique (a key with repeated rows, most likely)."""
    if frame.height < 2:
        return [], []
    usable = [c for c in columns if c.type not in ("boolean", "float")]
    distinct = {c.name: frame[c.name].n_unique() for c in usable}
    singles = [[c.name] for c in usable if c.required and distinct[c.name] == frame.height]
    if singles:
        return singles, []
    pairs = []
    required = [c for c in usable if c.required]
    for a, b in combinations(required[:KEY_COLUMNS], 2):
        if frame.select(pl.struct(a.name, b.name).n_unique()).item() == frame.height:
            pairs.append([a.name, b.name])
    near = [(name, n / frame.height) for name, n in distinct.items() if n >= COVERAGE * frame.height]
    return pairs[:5], sorted(near, key=lambda x: -x[1])[:3]


def infer(
    path: Path | str, *, dataset: str | None = None, sample_bytes: int = SAMPLE_BYTES, sample_rows: int = SAMPLE_ROWS
) -> Draft:
    """Read a bounded sample of ``path`` and draft a contract for it."""
    path = Path(path)
    src, frame, truncated = read_sample(path, sample_bytes=sample_bytes, sample_rows=sample_rows)
    seen_headers: dict[str, str] = {}
    for header in src.header:
        key = normalise_header(header)
        if key and key in seen_headers:
            raise FileRefused(
                "unexpected_columns",
                f"the header names {source_name(header)!r} twice (also as {seen_headers[key]!r}); "
                "the pipeline refuses such files, so fix the header first",
            )
        seen_headers[key] = source_name(header)
    taken: set[str] = set()
    stem = path.name.split(".", 1)[0]
    name = identifier(dataset or stem, set())
    seen_tokens: set[str] = set()
    for i in range(len(src.header)):
        stripped = frame[f"__f{i}"].str.strip_chars()
        seen_tokens |= set(stripped.filter(stripped.is_in(list(NULL_TOKENS))).unique().to_list())
    columns, renamed = [], {}
    unnamed = 0
    for i, header in enumerate(src.header):
        if not source_name(header):
            unnamed += 1
            continue
        col = infer_column(header, identifier(header, taken), frame[f"__f{i}"], seen_tokens)
        columns.append(col)
        renamed[f"__f{i}"] = col.name
    typed = frame.select(pl.col(raw).str.strip_chars().alias(name) for raw, name in renamed.items())
    distinct = typed.unique(maintain_order=True)
    keys, near = candidate_keys(distinct, columns)
    encoding = {"utf-8": "auto", "utf-8-sig": "auto", "cp1252": "cp1252"}.get(src.encoding, "auto")
    if src.encoding.startswith("utf-16"):
        encoding = "utf-16"
    return Draft(
        dataset=name,
        file=path.name,
        delimiter=src.delimiter,
        encoding=encoding,
        rows=frame.height,
        truncated=truncated,
        null_tokens=sorted(seen_tokens),
        columns=columns,
        keys=keys,
        near_keys=near,
        unnamed=unnamed,
        repeated_rows=typed.height - distinct.height,
    )


# --- TOML ------------------------------------------------------------------------------------------


def _s(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_s(v) for v in values) + "]"


def render(d: Draft) -> str:
    sampled = f"the first {d.rows:,} rows" if d.truncated else f"all {d.rows:,} rows"
    out = [
        f"# Draft contract for {d.file}, inferred from {sampled} by `python -m shared infer`.",
        "# Every line marked 'guess' is one: read them, edit, then dry-run the whole file with",
        f"#   python -m shared check {d.file} --contract <this file>",
        "# Format reference: docs/contracts.md",
        "",
        "[dataset]",
        f"name = {_s(d.dataset)}",
        "version = 1",
        f"description = {_s(f'Drafted from {d.file}.')}",
        "",
        "[csv]",
        f"delimiter = {_s(d.delimiter)}   # detected from the header line"
        if d.delimiter != source.ONE_COLUMN
        else 'delimiter = "auto"   # one column in the sample: nothing to split on',
        f"encoding = {_s(d.encoding)}",
    ]
    if d.null_tokens:
        out.append(f"null_values = {_list(['', *d.null_tokens])}   # guess: these stand for 'no value' in the sample")
    out += [
        "",
        "[schema]",
        'extra_columns = "discard"   # a new column is kept out and listed as drift',
        'missing_optional = "allow"',
        "max_invalid_share = 0.5",
        "",
        "[dedup]",
        *_dedup_lines(d),
        "",
        "[postgres]",
        'schema = "analytics"',
    ]
    if d.unnamed:
        out += ["", f"# {d.unnamed} column(s) of the file have no header name and are left out."]
    for col in d.columns:
        out += ["", *(f"# {note}" for note in col.notes), "[[columns]]", f"name = {_s(col.name)}", f"source = {_s(col.header)}"]
        out.append(f"type = {_s(col.type)}")
        if col.scale is not None:
            out.append(f"scale = {col.scale}")
        if col.formats:
            out.append(f"formats = {_list(col.formats)}")
        if col.timezone:
            out.append(f"timezone = {_s(col.timezone)}")
        if not col.required:
            out.append("required = false")
        if col.case:
            out.append(f"case = {_s(col.case)}")
        if col.allowed:
            out.append(_rule_line(col, "allowed", _list(col.allowed)))
        if col.pattern:
            out.append(_rule_line(col, "pattern", _s(col.pattern)))
    out += ["", *_aggregate_example(d)]
    return "\n".join(out) + "\n"


def _rule_line(col: ColumnDraft, rule: str, value: str) -> str:
    """A proposed rule: in force when every sampled value fits it, else commented out and saying
    what it would reject, so that a draft never refuses rows its own sample holds."""
    line = f"{rule} = {value}"
    misfit = col.misfits.get(rule)
    if misfit is None:
        return line
    examples = ", ".join(repr(v) for v in misfit.examples)
    return f"# {line}   # would reject {misfit.count:,} of {col.sampled:,} sampled values, e.g. {examples}"


MIN_RECORDS_FOR_A_KEY = 50
MAX_RESENT_SHARE = 0.1
"""Repeats are taken for records sent twice only when a column tells at least this many
distinct records apart and at most this share of the lines repeat: a feed where most lines
repeat (one item per line) is not a feed of re-sent records."""


def _dedup_lines(d: Draft) -> list[str]:
    """``none`` unless the sample shows exact repeats of rows that something identifies: a
    repeated line with no identifier may be a second item (one item per line), and dropping it
    would lose a row of the feed's totals without a word."""
    if not d.repeated_rows:
        return [
            'mode = "none"   # no sampled line repeats another exactly: every row is kept. "row" drops exact',
            '                # repeats, "key" (with key = [...]) keeps the first row of each key; ' + _key_note(d),
        ]
    share = f"{d.repeated_rows:,} of {d.rows:,} sampled lines repeat an earlier line exactly"
    distinct = d.rows - d.repeated_rows
    if d.keys and distinct >= MIN_RECORDS_FOR_A_KEY and d.repeated_rows <= MAX_RESENT_SHARE * d.rows:
        return [
            f'mode = "row"   # guess: {share}, and {", ".join(d.keys[0])} identifies a record among the',
            '                # others: the repeats look like records sent twice. Use "none" if a repeat is a real row',
        ]
    return [
        f'mode = "none"   # guess: {share}, but no column identifies a record: if a repeated line is a',
        '                # second item, "none" keeps it; if it is a mistake, use "row" (drops them)',
    ]


def _key_note(d: Draft) -> str:
    if d.keys:
        return "candidate keys (no empty value, no repeat in the sample): " + "; ".join(", ".join(k) for k in d.keys)
    if d.near_keys:
        near = ", ".join(f"{name} ({share:.1%} distinct)" for name, share in d.near_keys)
        return f"nearly unique in the sample, a key with repeated rows? {near}"
    return "no column or pair of columns is unique in the sample"


def _aggregate_example(d: Draft) -> list[str]:
    """A commented-out aggregate built from the draft's own columns, to edit and uncomment; it
    sums the first number column that looks like a quantity, and names the ones it passed over."""
    time = next((c for c in d.columns if c.type in ("date", "timestamp")), None)
    group = next((c for c in d.columns if c.allowed), None)
    numbers = [c for c in d.columns if c.type in NUMBERS]
    measure = next((c for c in numbers if not c.not_a_measure), None)
    keys = []
    if time:
        keys.append(f'{{ column = {_s(time.name)}, bucket = "day", name = "day" }}')
    if group:
        keys.append(_s(group.name))
    if not keys:
        return ["# No aggregate proposed: add [[aggregates]] tables (docs/contracts.md) for PostgreSQL views."]
    metrics = ['{ name = "rows", op = "count" }']
    if measure:
        metrics.append(f'{{ name = {_s(measure.name + "_total")}, op = "sum", column = {_s(measure.name)} }}')
    out = ["# An aggregate becomes a table and a view in PostgreSQL; uncomment and edit to have one:"]
    passed = [f"{c.name} ({c.not_a_measure})" for c in numbers if c.not_a_measure]
    if passed:
        rest = "" if measure else "; no other number column, so only rows are counted"
        out.append(f"# Not summed, identifiers or labels rather than quantities: {'; '.join(passed)}{rest}.")
    return [
        *out,
        "# [[aggregates]]",
        f"# name = {_s(d.dataset + '_daily')}",
        f"# group_by = [{', '.join(keys)}]",
        f"# metrics = [{', '.join(metrics)}]",
    ]


def validate(text: str) -> None:
    """Load a rendered draft the way the pipeline loads contracts; raise if it does not."""
    with tempfile.TemporaryDirectory(prefix="draft-") as tmp:
        path = Path(tmp) / "draft.toml"
        path.write_text(text, encoding="utf-8")
        load_contract(path)
