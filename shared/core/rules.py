"""Column rules as polars expressions: raw CSV text in, a typed value and a reason code out.

Every rule of a contract column becomes a vectorised expression, so validation runs inside
polars' streaming engine with no per-row Python. The shape follows dataframely's ``filter()``:
valid rows go one way, and each rejected row carries the first rule it broke (a stable reason
code) and the column it concerns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from shared.core.contract import Column

# Reason codes for rows. Stable: reports, dashboards and the ledger key on them.
MISSING_VALUE = "missing_value"
INVALID_NUMBER = "invalid_number"
INVALID_BOOLEAN = "invalid_boolean"
INVALID_DATE = "invalid_date"
INVALID_TIMESTAMP = "invalid_timestamp"
OUT_OF_RANGE = "out_of_range"
NOT_ALLOWED = "not_allowed"
PATTERN_MISMATCH = "pattern_mismatch"
RAGGED_ROW = "ragged_row"

ROW_REASONS = (
    MISSING_VALUE, INVALID_NUMBER, INVALID_BOOLEAN, INVALID_DATE, INVALID_TIMESTAMP,
    OUT_OF_RANGE, NOT_ALLOWED, PATTERN_MISMATCH, RAGGED_ROW,
)  # fmt: skip

ROW_REASON_MEANINGS = {
    MISSING_VALUE: "a required column is empty or holds a null token; fill it in, or make the column optional",
    INVALID_NUMBER: "not a number of the column's type (for a decimal: more places than its scale); fix the value",
    INVALID_BOOLEAN: "not one of the column's true or false spellings; fix it, or add the spelling to the contract",
    INVALID_DATE: "not a date in any of the column's formats; fix it, or add the format to the contract",
    INVALID_TIMESTAMP: "not a time in the column's formats, or a wall-clock time daylight saving skips or repeats",
    OUT_OF_RANGE: "a number, date or time outside the column's min and max",
    NOT_ALLOWED: "not one of the column's allowed values; fix it, or map the spelling in the contract",
    PATTERN_MISMATCH: "the cleaned text does not match the column's pattern",
    RAGGED_ROW: (
        "the row has fewer or more fields than the header (a line cut short or blank, a missing or stray delimiter, "
        "an unquoted one inside a value); one trailing empty field is tolerated"
    ),
}
"""What each row reason means and what a person can do about it: the report shows these."""

INVALID_CODE = {
    "integer": INVALID_NUMBER,
    "decimal": INVALID_NUMBER,
    "float": INVALID_NUMBER,
    "boolean": INVALID_BOOLEAN,
    "date": INVALID_DATE,
    "timestamp": INVALID_TIMESTAMP,
}


def dtype_of(column: Column) -> pl.DataType:
    """The polars type a column is parsed into (and written to Parquet as)."""
    return {
        "string": pl.String(),
        "integer": pl.Int64(),
        "decimal": pl.Decimal(38, column.scale),
        "float": pl.Float64(),
        "boolean": pl.Boolean(),
        "date": pl.Date(),
        "timestamp": pl.Datetime("us", "UTC"),
    }[column.type]


@dataclass(frozen=True)
class ColumnRules:
    """The expressions for one column, each over the previous stage's columns."""

    cleaned: pl.Expr  # stage 1: trimmed, null tokens removed, case and spellings applied (String)
    value: pl.Expr  # stage 2: typed value, null when missing or unparsable
    ok: pl.Expr  # stage 3: True when the column passes every rule
    reason: pl.Expr  # stage 3: first broken rule's code, null when ok


def cleaned_name(column: Column) -> str:
    return f"__clean_{column.name}"


ABSENT = "__absent"
"""The raw column the transform points a contract column at when the file lacks it (all null)."""


def null_tokens(column: Column) -> list[str]:
    """The texts that mean "no value" for a column, as they compare after trimming.

    An empty field is always missing for a typed column (no number, date or flag is spelt
    ""), whatever the list says. Only a string column can keep "" as a value, and only when
    its contract leaves "" out of ``null_values`` on purpose."""
    tokens = list(dict.fromkeys(t.strip() if column.trim else t for t in column.null_values))
    if column.type != "string" and "" not in tokens:
        tokens.append("")
    return tokens


def column_rules(column: Column, raw: str, *, absent: bool | None = None) -> ColumnRules:
    """Build the expressions for ``column`` whose raw text sits in the column named ``raw``.

    ``absent`` says the file has no such column (by default: ``raw`` is ``ABSENT``); its
    values are then null whatever the null tokens are."""
    text = pl.col(raw)
    tokens = null_tokens(column)
    if "" not in tokens and not (raw == ABSENT if absent is None else absent):
        # polars reads an unquoted empty field as null, a quoted one ("") as "": without ""
        # among the null tokens both are the empty string, as the contract asks.
        text = text.fill_null("")
    if column.trim:
        text = text.str.strip_chars()
    if tokens == [""]:
        text = pl.when(text.str.len_bytes() > 0).then(text)
    elif tokens:
        text = pl.when(~text.is_in(tokens)).then(text)
    if column.case == "upper":
        text = text.str.to_uppercase()
    elif column.case == "lower":
        text = text.str.to_lowercase()
    elif column.case == "title":
        text = text.str.to_titlecase()
    if column.mapping:
        text = text.replace(dict(column.mapping))

    c = pl.col(cleaned_name(column))
    value = _parse(column, c).alias(column.name)

    v = pl.col(column.name)
    present = c.is_not_null()
    checks: list[tuple[pl.Expr, str]] = []
    if column.required:
        checks.append((~present, MISSING_VALUE))
    if column.type != "string":
        checks.append((present & v.is_null(), INVALID_CODE[column.type]))
    if column.min is not None or column.max is not None:
        low = v < _literal(column, column.min) if column.min is not None else pl.lit(False)
        high = v > _literal(column, column.max) if column.max is not None else pl.lit(False)
        checks.append(((low | high).fill_null(False), OUT_OF_RANGE))
    if column.allowed:
        checks.append((present & ~v.is_in(list(column.allowed)), NOT_ALLOWED))
    if column.pattern:
        checks.append((present & ~v.str.contains(f"^(?:{column.pattern})$"), PATTERN_MISMATCH))

    if not checks:
        return ColumnRules(text.alias(cleaned_name(column)), value, pl.lit(True), pl.lit(None, pl.String))
    broken = checks[0][0]
    for cond, _ in checks[1:]:
        broken = broken | cond
    reason = pl.when(checks[0][0]).then(pl.lit(checks[0][1]))
    for cond, code in checks[1:]:
        reason = reason.when(cond).then(pl.lit(code))
    return ColumnRules(text.alias(cleaned_name(column)), value, ~broken, reason.otherwise(pl.lit(None, pl.String)))


def _literal(column: Column, bound: object) -> pl.Expr:
    if column.type in ("decimal", "date", "timestamp"):
        return pl.lit(bound, dtype=dtype_of(column))
    return pl.lit(bound)


AMBIGUOUS = {"reject": "null", "earliest": "earliest", "latest": "latest"}
"""Contract spelling of a repeated wall-clock time's resolution -> polars' ``ambiguous``."""


def _parse(column: Column, c: pl.Expr) -> pl.Expr:
    kind = column.type
    if kind == "string":
        return c
    if kind == "integer":
        return c.cast(pl.Int64, strict=False)
    if kind == "float":
        parsed = c.cast(pl.Float64, strict=False)
        return pl.when(parsed.is_finite()).then(parsed)
    if kind == "decimal":
        # Plain decimal notation only, with no non-zero digit beyond the scale: a cast alone
        # would silently truncate "12.345" to 12.34 or read "1e-5" as 0.
        s = column.scale
        frac = rf"(?:\.\d{{0,{s}}}0*)?" if s else r"(?:\.0*)?"
        shape = rf"^[+-]?(?:\d+{frac}|\.\d{{1,{s}}}0*)$" if s else rf"^[+-]?\d+{frac}$"
        return pl.when(c.str.contains(shape)).then(c.cast(pl.Decimal(38, s), strict=False))
    if kind == "boolean":
        mapping = dict.fromkeys(column.true_values, True) | dict.fromkeys(column.false_values, False)
        return c.str.to_lowercase().replace_strict(mapping, default=None, return_dtype=pl.Boolean)
    if kind == "date":
        parsed = [c.str.to_date(fmt, strict=False) for fmt in column.formats]
        value = parsed[0] if len(parsed) == 1 else pl.coalesce(parsed)
        if any("%Y" in fmt for fmt in column.formats):
            # chrono's %Y also reads "22" as the year 22; a real feed never means that.
            value = pl.when(value.dt.year() >= 1000).then(value)
        return value
    if kind == "timestamp":
        parsed = []
        for fmt in column.formats:
            if has_zone(fmt):  # a value with its own offset is exact
                parsed.append(c.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False))
                continue
            # A naive value is read in the contract's zone. A wall-clock time that zone skips
            # (the spring-forward gap) is no instant at all: invalid, never a crash of the run;
            # one it repeats (the autumn fall-back) is resolved as the contract says.
            naive = c.str.to_datetime(fmt, time_unit="us", strict=False)
            ts = naive.dt.replace_time_zone(column.timezone, ambiguous=AMBIGUOUS[column.ambiguous], non_existent="null")
            parsed.append(ts if column.timezone == "UTC" else ts.dt.convert_time_zone("UTC"))
        value = parsed[0] if len(parsed) == 1 else pl.coalesce(parsed)
        return pl.when(value.dt.year() >= 1000).then(value)
    raise ValueError(kind)  # the contract loader rejects unknown types first


def has_zone(fmt: str) -> bool:
    return bool(re.search(r"%[zZ:]|%#z", fmt))
