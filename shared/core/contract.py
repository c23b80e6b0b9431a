"""Dataset contracts: a TOML file per dataset says what its CSV looks like and what to make of it.

A contract is data, not code: a new feed needs a new file in ``contracts/``, never a change
in ``shared/``. Contracts are validated when they are loaded, so a broken one fails the
Function App at start-up with the file, the line and what is wrong, instead of failing at the
first blob. The format is documented in ``docs/contracts.md``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, cast

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
"""Dataset, column, table and view names: lower-case, PostgreSQL-safe, no quoting surprises."""

TYPES = ("string", "integer", "decimal", "float", "boolean", "date", "timestamp")
CASES = ("none", "upper", "lower", "title")
OPS = ("sum", "count", "min", "max", "mean", "count_distinct")
BUCKETS = ("hour", "day", "week", "month", "quarter", "year")
ENCODINGS = ("auto", "utf-8", "utf-16", "cp1252", "latin-1")
EXTRA_POLICIES = ("discard", "keep", "reject_file")
MISSING_POLICIES = ("allow", "reject_file")
AMBIGUOUS_TIMES = ("reject", "earliest", "latest")
DEDUP_MODES = ("none", "row", "key")
"""``none``: every valid row is kept, repeats included; ``row``: exact duplicate rows (after
cleaning) are kept once; ``key``: the first valid row of each ``key`` is kept."""
DedupMode = Literal["none", "row", "key"]

# polars runs a column's pattern with Rust's regex engine, which has no look-around and no
# back-references: a pattern Python accepts could still fail at the first file. These are
# refused when the contract is loaded instead (no polars import: start-up stays fast).
_REGEX_TOKEN = re.compile(r"\\.|\[\^?\]?(?:\\.|[^\]\\])*\]|\(\?<?[=!]|\(\?>|\(\?\(|\(\?P=|[*+?}]\+|.", re.DOTALL)
_UNSUPPORTED_ESCAPES = {*(f"\\{d}" for d in "123456789"), "\\Z"}


def unsupported_regex(pattern: str) -> str | None:
    """The first construct of ``pattern`` that polars' regex engine does not have, if any."""
    for match in _REGEX_TOKEN.finditer(pattern):
        token = match.group(0)
        if token.startswith("\\"):
            if token in _UNSUPPORTED_ESCAPES:
                return token
        elif len(token) > 1 and not token.startswith("["):
            return token
    return None


DEFAULT_DATE_FORMATS = ("%Y-%m-%d",)
DEFAULT_TIMESTAMP_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
)
DEFAULT_TRUE = ("true", "t", "yes", "y", "1")
DEFAULT_FALSE = ("false", "f", "no", "n", "0")


class ContractError(ValueError):
    """A contract that cannot be used, located in its file."""

    def __init__(self, path: Path | str, line: int | None, where: str, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.where = where
        self.problem = problem
        at = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{at}: {where}: {problem}" if where else f"{at}: {problem}")


@dataclass(frozen=True)
class Column:
    """One output column and the rules that turn its raw CSV text into a typed value."""

    name: str
    source: str
    type: str
    required: bool = True
    trim: bool = True
    case: str = "none"
    null_values: tuple[str, ...] = ("",)
    mapping: Mapping[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()
    pattern: str | None = None
    min: Any = None
    max: Any = None
    formats: tuple[str, ...] = ()
    timezone: str = "UTC"
    ambiguous: str = "reject"
    scale: int = 2
    true_values: tuple[str, ...] = DEFAULT_TRUE
    false_values: tuple[str, ...] = DEFAULT_FALSE


@dataclass(frozen=True)
class GroupKey:
    """A group-by key of an aggregate: a column, or a time bucket of a date/timestamp column."""

    name: str
    column: str
    bucket: str | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    op: str
    column: str | None = None


@dataclass(frozen=True)
class Aggregate:
    """An aggregate output: a Parquet file per source file, a PostgreSQL table and view."""

    name: str
    keys: tuple[GroupKey, ...]
    metrics: tuple[Metric, ...]
    table: str
    view: str


@dataclass(frozen=True)
class Dialect:
    delimiter: str | None = None  # None: detect from the header line
    quote: str | None = '"'
    encoding: str = "auto"


@dataclass(frozen=True)
class Drift:
    """What happens when a file's columns are not what the contract says."""

    extra_columns: str = "discard"
    missing_optional: str = "allow"
    max_invalid_share: float = 0.5


@dataclass(frozen=True)
class Contract:
    dataset: str
    version: int
    columns: tuple[Column, ...]
    aggregates: tuple[Aggregate, ...]
    schema: str
    dialect: Dialect = Dialect()
    drift: Drift = Drift()
    dedup_key: tuple[str, ...] = ()
    dedup_mode: DedupMode = "row"
    description: str = ""
    path: str = ""

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def dedup_columns(self) -> tuple[str, ...]:
        """The columns whose values make two rows the same: the key, or the whole row (also
        under ``none``, where they only decide which rows pass 2 reads together)."""
        return self.dedup_key if self.dedup_mode == "key" else tuple(c.name for c in self.columns)

    @property
    def deduplicates(self) -> bool:
        return self.dedup_mode != "none"


def normalise_header(name: str) -> str:
    """Header names match ignoring case, surrounding spaces and a byte-order mark."""
    return name.replace("\ufeff", "").strip().casefold()


# --- loading -------------------------------------------------------------------------------


def load_contract(path: Path | str) -> Contract:
    """Read and validate one contract file; raise ContractError with the line on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(path, None, "", f"not UTF-8 text (byte {exc.start}): save the contract as UTF-8") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ContractError(path, int(match.group(1)) if match else None, "", f"not valid TOML: {exc}") from None
    return _Reader(path, text).contract(doc)


def load_contracts(directory: Path | str) -> dict[str, Contract]:
    """Every ``*.toml`` in a directory, keyed by dataset name; duplicates are an error."""
    contracts: dict[str, Contract] = {}
    for file in sorted(Path(directory).glob("*.toml")):
        contract = load_contract(file)
        if contract.dataset in contracts:
            raise ContractError(
                file, None, "dataset.name", f"{contract.dataset!r} is also defined in {contracts[contract.dataset].path}"
            )
        contracts[contract.dataset] = contract
    return contracts


class _Reader:
    """Turns a parsed TOML document into a Contract, reporting problems at their line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    # Locating a problem: find the n-th ``[[table]]`` header, then the key inside it.
    def line_of(self, where: tuple[str | int, ...]) -> int | None:
        start, stop = 0, len(self.lines)
        parts = list(where)
        if parts and isinstance(parts[0], str):
            table = parts.pop(0)
            index = parts.pop(0) if parts and isinstance(parts[0], int) else None
            headers = [
                i
                for i, line in enumerate(self.lines)
                if re.match(rf"^\s*\[\[?\s*{re.escape(str(table))}\s*\]\]?\s*(#.*)?$", line)
            ]
            if index is not None and index < len(headers):
                start = headers[index]
                later = [i for i, line in enumerate(self.lines) if i > start and re.match(r"^\s*\[", line)]
                stop = later[0] if later else len(self.lines)
            elif headers:
                start = headers[0]
            else:
                # an inline table or key at top level, e.g. ``dataset = {...}``
                for i, line in enumerate(self.lines):
                    if re.match(rf"^\s*{re.escape(str(table))}\s*[=.]", line):
                        return i + 1
                return None
        key = next((p for p in parts if isinstance(p, str)), None)
        if key is None:
            return start + 1
        for i in range(start, stop):
            if re.match(rf"^\s*{re.escape(key)}\s*=", self.lines[i]) or re.search(
                rf"[{{,]\s*{re.escape(key)}\s*=", self.lines[i]
            ):
                return i + 1
        return start + 1

    def fail(self, where: tuple[str | int, ...], problem: str) -> ContractError:
        label = ""
        for part in where:
            label += f"[{part}]" if isinstance(part, int) else (f".{part}" if label else part)
        return ContractError(self.path, self.line_of(where), label, problem)

    def get(
        self, table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: tuple[str | int, ...], default: Any = ...
    ) -> Any:
        if key not in table:
            if default is ...:
                raise self.fail(where, f"{key!r} is required")
            return default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool and (kind is int or kind is float):
            raise self.fail((*where, key), f"expected a {getattr(kind, '__name__', kind)}, got {value!r}")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail((*where, key), f"expected a {names}, got {value!r}")
        return value

    def unknown_keys(self, table: Mapping[str, Any], allowed: Iterable[str], where: tuple[str | int, ...]) -> None:
        extra = sorted(set(table) - set(allowed))
        if extra:
            raise self.fail((*where, extra[0]), f"unknown key {extra[0]!r} (known: {', '.join(sorted(allowed))})")

    def identifier(self, value: str, where: tuple[str | int, ...]) -> str:
        if not IDENTIFIER.match(value):
            raise self.fail(
                where, f"{value!r} is not a valid name (lower-case letters, digits and _, starting with a letter, at most 63)"
            )
        return value

    def choice(self, value: str, options: tuple[str, ...], where: tuple[str | int, ...]) -> str:
        if value not in options:
            raise self.fail(where, f"{value!r} is not one of {', '.join(options)}")
        return value

    def contract(self, doc: dict[str, Any]) -> Contract:
        self.unknown_keys(doc, ("dataset", "csv", "schema", "dedup", "columns", "aggregates", "postgres"), ())
        ds = self.get(doc, "dataset", dict, ("dataset",))
        name, version = self.dataset_name(ds), self.version(ds)  # checked in the order they are written
        dialect, null_values = self.dialect(doc)
        drift = self.drift(doc)
        columns = self.columns(doc, null_values)
        dedup_mode, dedup_key = self.dedup(doc, [c.name for c in columns])
        schema = self.postgres_schema(doc)
        return Contract(
            dataset=name,
            version=version,
            columns=columns,
            aggregates=self.aggregates(doc, columns),
            schema=schema,
            dialect=dialect,
            drift=drift,
            dedup_key=dedup_key,
            dedup_mode=dedup_mode,
            description=self.get(ds, "description", str, ("dataset",), ""),
            path=str(self.path),
        )

    # --- the sections of a contract, one method each ---------------------------------------

    def dataset_name(self, ds: dict[str, Any]) -> str:
        self.unknown_keys(ds, ("name", "version", "description"), ("dataset",))
        return self.identifier(self.get(ds, "name", str, ("dataset",)), ("dataset", "name"))

    def version(self, ds: dict[str, Any]) -> int:
        version: int = self.get(ds, "version", int, ("dataset",))
        if version < 1:
            raise self.fail(("dataset", "version"), "must be a positive integer")
        return version

    def dialect(self, doc: dict[str, Any]) -> tuple[Dialect, tuple[str, ...]]:
        """``[csv]``: how the file is written, and the null tokens every column inherits."""
        csv = self.get(doc, "csv", dict, ("csv",), {})
        self.unknown_keys(csv, ("delimiter", "quote", "encoding", "null_values"), ("csv",))
        delimiter = self.get(csv, "delimiter", str, ("csv",), "auto")
        if delimiter != "auto" and len(delimiter.encode()) != 1:
            raise self.fail(("csv", "delimiter"), "must be one single-byte character or 'auto'")
        quote = self.get(csv, "quote", str, ("csv",), '"')
        if len(quote.encode()) > 1:
            raise self.fail(("csv", "quote"), "must be one single-byte character, or '' for none")
        encoding = self.choice(self.get(csv, "encoding", str, ("csv",), "auto").lower(), ENCODINGS, ("csv", "encoding"))
        null_values = tuple(self.strings(csv, "null_values", ("csv",), ("",)))
        return Dialect(delimiter=None if delimiter == "auto" else delimiter, quote=quote or None, encoding=encoding), null_values

    def drift(self, doc: dict[str, Any]) -> Drift:
        """``[schema]``: what to do when a file's columns are not what the contract says."""
        sch = self.get(doc, "schema", dict, ("schema",), {})
        self.unknown_keys(sch, ("extra_columns", "missing_optional", "max_invalid_share"), ("schema",))
        extra = self.get(sch, "extra_columns", str, ("schema",), "discard")
        missing = self.get(sch, "missing_optional", str, ("schema",), "allow")
        drift = Drift(
            extra_columns=self.choice(extra, EXTRA_POLICIES, ("schema", "extra_columns")),
            missing_optional=self.choice(missing, MISSING_POLICIES, ("schema", "missing_optional")),
            max_invalid_share=self.get(sch, "max_invalid_share", float, ("schema",), 0.5),
        )
        if not 0 < drift.max_invalid_share <= 1:
            raise self.fail(("schema", "max_invalid_share"), "must be greater than 0 and at most 1")
        return drift

    def columns(self, doc: dict[str, Any], null_values: tuple[str, ...]) -> tuple[Column, ...]:
        """``[[columns]]``: at least one; names and source headers each used once."""
        raw_columns = self.get(doc, "columns", list, ("columns",))
        if not raw_columns:
            raise self.fail(("columns",), "a contract needs at least one column")
        columns = tuple(self.column(c, i, null_values) for i, c in enumerate(raw_columns))
        names = [c.name for c in columns]
        sources = [normalise_header(c.source) for c in columns]
        for i, col in enumerate(columns):
            if names.index(col.name) != i:
                raise self.fail(("columns", i, "name"), f"column {col.name!r} is defined twice")
            if sources.index(normalise_header(col.source)) != i:
                raise self.fail(("columns", i, "source"), f"source header {col.source!r} is used by two columns")
        return columns

    def dedup(self, doc: dict[str, Any], names: list[str]) -> tuple[DedupMode, tuple[str, ...]]:
        """``[dedup]``: ``mode`` and, for ``key``, the key. Without ``mode`` (contracts written
        before it existed) a non-empty ``key`` means ``key`` and an empty one ``row``."""
        dedup = self.get(doc, "dedup", dict, ("dedup",), {})
        self.unknown_keys(dedup, ("mode", "key"), ("dedup",))
        key = tuple(self.strings(dedup, "key", ("dedup",), ()))
        for k in key:
            if k not in names:
                raise self.fail(("dedup", "key"), f"{k!r} is not a column")
        if len(set(key)) != len(key):
            raise self.fail(("dedup", "key"), "names a column twice")
        default = "key" if key else "row"
        mode = cast(DedupMode, self.choice(self.get(dedup, "mode", str, ("dedup",), default), DEDUP_MODES, ("dedup", "mode")))
        if mode == "key" and not key:
            raise self.fail(("dedup", "key"), 'mode = "key" needs the key columns, e.g. key = ["order_id"]')
        if mode != "key" and key:
            raise self.fail(("dedup", "key"), f'a key means nothing under mode = "{mode}": remove it, or use mode = "key"')
        return mode, key

    def postgres_schema(self, doc: dict[str, Any]) -> str:
        pg = self.get(doc, "postgres", dict, ("postgres",), {})
        self.unknown_keys(pg, ("schema",), ("postgres",))
        return self.identifier(self.get(pg, "schema", str, ("postgres",), "analytics"), ("postgres", "schema"))

    def aggregates(self, doc: dict[str, Any], columns: tuple[Column, ...]) -> tuple[Aggregate, ...]:
        """``[[aggregates]]``: names, tables and views each used once."""
        raw_aggs = self.get(doc, "aggregates", list, ("aggregates",), [])
        aggregates = tuple(self.aggregate(a, i, columns) for i, a in enumerate(raw_aggs))
        seen: set[str] = set()
        for i, agg in enumerate(aggregates):
            for obj in (agg.name, agg.table, agg.view):
                if obj in seen and obj != agg.name:
                    raise self.fail(("aggregates", i, "table"), f"{obj!r} is used twice")
            if agg.name in seen:
                raise self.fail(("aggregates", i, "name"), f"aggregate {agg.name!r} is defined twice")
            seen.update((agg.name, agg.table, agg.view))
        return aggregates

    def strings(self, table: Mapping[str, Any], key: str, where: tuple[str | int, ...], default: Iterable[str]) -> list[str]:
        value = self.get(table, key, list, where, list(default))
        if not all(isinstance(v, str) for v in value):
            raise self.fail((*where, key), "expected a list of strings")
        return list(value)

    def column(self, raw: Any, i: int, null_values: tuple[str, ...]) -> Column:
        where: tuple[str | int, ...] = ("columns", i)
        if not isinstance(raw, dict):
            raise self.fail(where, "each column is a table")
        allowed_keys = (
            "name", "source", "type", "required", "trim", "case", "null_values", "map", "allowed",
            "pattern", "min", "max", "formats", "timezone", "ambiguous", "scale", "true_values", "false_values",
        )  # fmt: skip
        self.unknown_keys(raw, allowed_keys, where)
        name = self.identifier(self.get(raw, "name", str, where), (*where, "name"))
        kind = self.choice(self.get(raw, "type", str, where), TYPES, (*where, "type"))
        source = self.get(raw, "source", str, where, name)
        if not normalise_header(source):
            raise self.fail((*where, "source"), "must not be empty")
        col_nulls = tuple(self.strings(raw, "null_values", where, null_values))
        mapping = self.get(raw, "map", dict, where, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise self.fail((*where, "map"), "expected a table of spelling = canonical strings")
        pattern = self.pattern(raw, where)
        formats = self.formats(raw, kind, where)
        scale = self.get(raw, "scale", int, where, 2)
        if not 0 <= scale <= 18:
            raise self.fail((*where, "scale"), "must be between 0 and 18")
        if "scale" in raw and kind != "decimal":
            raise self.fail((*where, "scale"), "only decimal columns take a scale")
        timezone = self.timezone(raw, kind, where)
        ambiguous = self.choice(self.get(raw, "ambiguous", str, where, "reject"), AMBIGUOUS_TIMES, (*where, "ambiguous"))
        if "ambiguous" in raw and kind != "timestamp":
            raise self.fail((*where, "ambiguous"), "only timestamp columns take an ambiguous-time rule")
        col = Column(
            name=name,
            source=source,
            type=kind,
            required=self.get(raw, "required", bool, where, True),
            trim=self.get(raw, "trim", bool, where, True),
            case=self.choice(self.get(raw, "case", str, where, "none"), CASES, (*where, "case")),
            null_values=col_nulls,
            mapping=dict(mapping),
            allowed=tuple(self.strings(raw, "allowed", where, ())),
            pattern=pattern,
            min=self.bound(raw, "min", kind, where),
            max=self.bound(raw, "max", kind, where),
            formats=formats,
            timezone=timezone,
            ambiguous=ambiguous,
            scale=scale,
            true_values=tuple(v.casefold() for v in self.strings(raw, "true_values", where, DEFAULT_TRUE)),
            false_values=tuple(v.casefold() for v in self.strings(raw, "false_values", where, DEFAULT_FALSE)),
        )
        if (col.allowed or col.pattern or col.mapping) and kind != "string":
            raise self.fail(
                (*where, "allowed" if col.allowed else "pattern" if col.pattern else "map"),
                "only string columns take allowed values, a pattern or a map",
            )
        if col.min is not None and col.max is not None and col.min > col.max:
            raise self.fail((*where, "min"), "min is greater than max")
        self.reachable(col, raw, where)
        return col

    def pattern(self, raw: Mapping[str, Any], where: tuple[str | int, ...]) -> str | None:
        """A regular expression that Python compiles and polars' Rust engine can also run."""
        pattern: str | None = self.get(raw, "pattern", str, where, None)
        if pattern is None:
            return None
        try:
            re.compile(pattern)
        except re.error as exc:
            raise self.fail((*where, "pattern"), f"not a valid regular expression: {exc}") from None
        unsupported = unsupported_regex(pattern)
        if unsupported:
            raise self.fail(
                (*where, "pattern"),
                f"{unsupported!r} is not supported: patterns run in polars (Rust regex), "
                "which has no look-around, back-references, atomic groups, possessive repeats or \\Z",
            )
        return pattern

    def formats(self, raw: Mapping[str, Any], kind: str, where: tuple[str | int, ...]) -> tuple[str, ...]:
        """strptime formats, tried in order; dates and timestamps have ISO defaults."""
        formats = tuple(self.strings(raw, "formats", where, ()))
        if formats and kind not in ("date", "timestamp"):
            raise self.fail((*where, "formats"), f"only date and timestamp columns take formats, not {kind}")
        if formats:
            return formats
        return {"date": DEFAULT_DATE_FORMATS, "timestamp": DEFAULT_TIMESTAMP_FORMATS}.get(kind, ())

    def timezone(self, raw: Mapping[str, Any], kind: str, where: tuple[str | int, ...]) -> str:
        timezone: str = self.get(raw, "timezone", str, where, "UTC")
        if kind == "timestamp":
            try:
                from zoneinfo import ZoneInfo

                ZoneInfo(timezone)
            except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
                raise self.fail((*where, "timezone"), f"unknown time zone {timezone!r}") from None
        elif "timezone" in raw:
            raise self.fail((*where, "timezone"), "only timestamp columns take a time zone")
        return timezone

    def reachable(self, col: Column, raw: Mapping[str, Any], where: tuple[str | int, ...]) -> None:
        """Refuse rules that can never match: the map sees text after trimming and the case
        rule, and the allowed values see it after the map. An allowed "Cash" under
        ``case = "upper"`` would reject every row, silently, so it is a contract error."""
        convert = {"upper": str.upper, "lower": str.lower, "title": str.title}.get(col.case)
        if convert is None:
            return
        for key in col.mapping:
            if convert(key) != key:
                raise self.fail((*where, "map"), f"map key {key!r} can never match: values are {col.case}-cased first")
        targets = set(col.mapping.values())
        for value in col.allowed:
            if convert(value) != value and value not in targets:
                raise self.fail(
                    (*where, "allowed"), f"allowed value {value!r} can never match: values are {col.case}-cased first"
                )

    def bound(self, raw: Mapping[str, Any], key: str, kind: str, where: tuple[str | int, ...]) -> Any:
        if key not in raw:
            return None
        value = raw[key]
        if kind in ("integer", "float", "decimal"):
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise self.fail((*where, key), f"expected a number, got {value!r}")
            try:
                number = Decimal(str(value))
            except InvalidOperation:
                raise self.fail((*where, key), f"expected a number, got {value!r}") from None
            if kind == "integer":
                if number != number.to_integral_value():
                    raise self.fail((*where, key), f"an integer column needs an integer bound, got {value!r}")
                return int(number)
            return float(number) if kind == "float" else number
        if kind == "date":
            if isinstance(value, date):
                return value
            try:
                return date.fromisoformat(str(value))
            except ValueError:
                raise self.fail((*where, key), f"expected a date like 2020-01-31, got {value!r}") from None
        if kind == "timestamp":
            return self.instant(value, (*where, key))
        raise self.fail((*where, key), f"{kind} columns take no {key}")

    def instant(self, value: Any, where: tuple[str | int, ...]) -> datetime:
        """A timestamp bound: a TOML date-time (or ISO text); without an offset it is UTC."""
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime(value.year, value.month, value.day)
        else:
            try:
                moment = datetime.fromisoformat(str(value))
            except ValueError:
                raise self.fail(where, f"expected a date-time like 2020-01-31T00:00:00Z, got {value!r}") from None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    def aggregate(self, raw: Any, i: int, columns: tuple[Column, ...]) -> Aggregate:
        where: tuple[str | int, ...] = ("aggregates", i)
        if not isinstance(raw, dict):
            raise self.fail(where, "each aggregate is a table")
        self.unknown_keys(raw, ("name", "group_by", "metrics", "table", "view"), where)
        by_name = {c.name: c for c in columns}
        name = self.identifier(self.get(raw, "name", str, where), (*where, "name"))
        keys: list[GroupKey] = []
        for key in self.get(raw, "group_by", list, where):
            if isinstance(key, str):
                if key not in by_name:
                    raise self.fail((*where, "group_by"), f"{key!r} is not a column")
                keys.append(GroupKey(name=key, column=key))
            elif isinstance(key, dict):
                self.unknown_keys(key, ("column", "bucket", "name"), (*where, "group_by"))
                column = self.get(key, "column", str, (*where, "group_by"))
                if column not in by_name:
                    raise self.fail((*where, "group_by"), f"{column!r} is not a column")
                bucket = self.choice(self.get(key, "bucket", str, (*where, "group_by")), BUCKETS, (*where, "group_by"))
                if by_name[column].type not in ("date", "timestamp"):
                    raise self.fail(
                        (*where, "group_by"),
                        f"a time bucket needs a date or timestamp column, {column!r} is {by_name[column].type}",
                    )
                if by_name[column].type == "date" and bucket == "hour":
                    raise self.fail((*where, "group_by"), "a date column has no hours")
                alias = self.identifier(
                    self.get(key, "name", str, (*where, "group_by"), f"{column}_{bucket}"), (*where, "group_by")
                )
                keys.append(GroupKey(name=alias, column=column, bucket=bucket))
            else:
                raise self.fail((*where, "group_by"), "each key is a column name or {column, bucket, name}")
        if not keys:
            raise self.fail((*where, "group_by"), "an aggregate needs at least one key")
        metrics: list[Metric] = []
        for j, m in enumerate(self.get(raw, "metrics", list, where)):
            mw = (*where, "metrics")
            if not isinstance(m, dict):
                raise self.fail(mw, "each metric is a table {name, op, column}")
            self.unknown_keys(m, ("name", "op", "column"), mw)
            op = self.choice(self.get(m, "op", str, mw), OPS, mw)
            column = self.get(m, "column", str, mw, None)
            if op != "count" and column is None:
                raise self.fail(mw, f"metric {j}: {op} needs a column")
            if column is not None:
                if column not in by_name:
                    raise self.fail(mw, f"metric {j}: {column!r} is not a column")
                kind = by_name[column].type
                if op in ("sum", "mean") and kind not in ("integer", "decimal", "float"):
                    raise self.fail(mw, f"metric {j}: cannot {op} a {kind} column")
                if op in ("min", "max") and kind in ("string", "boolean"):
                    raise self.fail(mw, f"metric {j}: min and max need a number, date or timestamp column")
            metrics.append(Metric(name=self.identifier(self.get(m, "name", str, mw), mw), op=op, column=column))
        if not metrics:
            raise self.fail((*where, "metrics"), "an aggregate needs at least one metric")
        out = [k.name for k in keys] + [m.name for m in metrics]
        dupes = sorted({n for n in out if out.count(n) > 1})
        if dupes:
            raise self.fail((*where, "metrics"), f"output name {dupes[0]!r} is used twice")
        return Aggregate(
            name=name,
            keys=tuple(keys),
            metrics=tuple(metrics),
            table=self.identifier(self.get(raw, "table", str, where, f"{name}_by_file"), (*where, "table")),
            view=self.identifier(self.get(raw, "view", str, where, name), (*where, "view")),
        )
