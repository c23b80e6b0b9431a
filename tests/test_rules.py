"""Each column rule of a contract, and each row reason code, on the smallest file that shows it.

Every case runs the real transform (``source.split`` then ``transform.run``) on a two-column
file: ``id`` (an integer that always parses) and ``v``, the column under test. A row is either
kept, with its typed value, or rejected with a reason code and the column it concerns.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from shared.core.rules import ROW_REASONS
from tests.helpers import contract_from, rejects, transform_bytes

UTC = dt.UTC


def outcomes(tmp_path: Path, column: str, values: list[str], extra: str = "") -> list[object]:
    """Run ``values`` (raw CSV text of the field, quoted by the caller if needed) through a
    contract whose column ``v`` is ``column``; return the kept value or (reason, column) per row."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    contract = contract_from(
        tmp_path,
        f'[dataset]\nname = "rules"\nversion = 1\n{extra}\n'
        '[dedup]\nkey = ["id"]\n\n'
        '[[columns]]\nname = "id"\ntype = "integer"\n\n'
        f'[[columns]]\nname = "v"\nsource = "V"\n{column}\n',
    )
    data = ("id,V\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values))).encode()
    result = transform_bytes(data, tmp_path, contract=contract)
    assert result.balanced and result.rows_read == len(values)
    out: list[object] = [None] * len(values)
    for row in pl.read_parquet(result.outputs.clean).iter_rows(named=True):
        out[row["id"]] = row["v"]
    for row in rejects(result).iter_rows(named=True):
        out[row["line"] - 2] = (row["reason"], row["column"])
    return out


MISSING = ("missing_value", "v")


# --- strings: trimming, null tokens, case, spellings, allowed values, patterns ---------------


def test_strings_are_trimmed_by_default_and_kept_as_they_are_with_trim_false(tmp_path):
    assert outcomes(tmp_path / "a", 'type = "string"', ["  Goa  ", '" Pune "']) == ["Goa", "Pune"]
    assert outcomes(tmp_path / "b", 'type = "string"\ntrim = false', ["  Goa  ", '" Pune "']) == ["  Goa  ", " Pune "]


def test_the_default_null_token_is_the_empty_field_quoted_or_not_and_blank_after_trimming(tmp_path):
    assert outcomes(tmp_path, 'type = "string"', ["", '""', "   ", "x"]) == [MISSING, MISSING, MISSING, "x"]


def test_listed_null_tokens_replace_the_default_and_compare_after_trimming(tmp_path):
    got = outcomes(tmp_path, 'type = "string"\nnull_values = ["", "NA", "-"]', ["NA", " - ", "na", "", "x"])
    assert got == [MISSING, MISSING, "na", MISSING, "x"]


def test_dataset_null_tokens_apply_to_every_column_unless_a_column_says_otherwise(tmp_path):
    csv_level = '[csv]\nnull_values = ["", "NULL"]\n'
    assert outcomes(tmp_path / "a", 'type = "string"', ["NULL", "x"], extra=csv_level) == [MISSING, "x"]
    got = outcomes(tmp_path / "b", 'type = "string"\nnull_values = ["?"]', ["NULL", "?"], extra=csv_level)
    assert got == ["NULL", MISSING]


def test_without_the_empty_token_a_string_keeps_empty_text_as_a_value(tmp_path):
    got = outcomes(tmp_path, 'type = "string"\nnull_values = []\ntrim = false', ["", '""', " "])
    assert got == ["", "", " "]


def test_an_empty_field_is_missing_for_a_typed_column_whatever_the_tokens_say(tmp_path):
    got = outcomes(tmp_path, 'type = "integer"\nnull_values = ["NA"]', ["", '""', "NA", "4"])
    assert got == [MISSING, MISSING, MISSING, 4]


def test_an_optional_column_accepts_a_missing_value_as_null(tmp_path):
    assert outcomes(tmp_path, 'type = "integer"\nrequired = false', ["", "5"]) == [None, 5]


@pytest.mark.parametrize(
    ("case", "expected"),
    [("upper", "NEW DELHI"), ("lower", "new delhi"), ("title", "New Delhi"), ("none", "nEw dELHI")],
)
def test_case_rules(tmp_path, case, expected):
    assert outcomes(tmp_path, f'type = "string"\ncase = "{case}"', ["nEw dELHI"]) == [expected]


def test_a_map_of_spellings_runs_after_trim_and_case_and_before_the_allowed_values(tmp_path):
    column = 'type = "string"\ncase = "upper"\nmap = { CC = "CARD", "CREDIT CARD" = "CARD" }\nallowed = ["CARD", "CASH"]'
    got = outcomes(tmp_path, column, [" cc ", "Credit Card", "cash", "cheque", ""])
    assert got == ["CARD", "CARD", "CASH", ("not_allowed", "v"), MISSING]


def test_a_pattern_must_match_the_whole_cleaned_value(tmp_path):
    column = 'type = "string"\ncase = "upper"\npattern = "[A-Z]{2}-\\\\d{3}"'
    got = outcomes(tmp_path, column, ["ab-123", "AB-1234", "xAB-123", "AB-12"])
    assert got == ["AB-123", ("pattern_mismatch", "v"), ("pattern_mismatch", "v"), ("pattern_mismatch", "v")]


def test_a_pattern_with_an_alternation_is_anchored_as_a_whole(tmp_path):
    got = outcomes(tmp_path, 'type = "string"\npattern = "a|b"', ["a", "b", "ab", "xa"])
    assert got == ["a", "b", ("pattern_mismatch", "v"), ("pattern_mismatch", "v")]


# --- numbers -------------------------------------------------------------------------------


def test_integers(tmp_path):
    got = outcomes(tmp_path, 'type = "integer"', ["12", "+7", " -3 ", "007", "1.0", "1e3", "12x", "9223372036854775808"])
    bad = ("invalid_number", "v")
    assert got == [12, 7, -3, 7, bad, bad, bad, bad]


def test_decimals_keep_their_scale_and_never_truncate_silently(tmp_path):
    got = outcomes(tmp_path, 'type = "decimal"\nscale = 2', ["12.34", "12.340", "-0.5", ".5", "7", "12.345", "1e-5", '"1,5"'])
    bad = ("invalid_number", "v")
    assert got == [Decimal("12.34"), Decimal("12.34"), Decimal("-0.50"), Decimal("0.50"), Decimal("7.00"), bad, bad, bad]


def test_a_decimal_of_scale_zero_takes_whole_numbers_only(tmp_path):
    got = outcomes(tmp_path, 'type = "decimal"\nscale = 0', ["12", "12.0", "12.5"])
    assert got == [Decimal(12), Decimal(12), ("invalid_number", "v")]


def test_floats_take_exponents_but_not_nan_or_infinity(tmp_path):
    got = outcomes(tmp_path, 'type = "float"', ["1.5", "1e3", "-2E-2", "nan", "inf", "-Infinity", "x"])
    bad = ("invalid_number", "v")
    assert got == [1.5, 1000.0, -0.02, bad, bad, bad, bad]


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        ('type = "integer"\nmin = 1\nmax = 10', ["0", "1", "10", "11"], [False, True, True, False]),
        ('type = "decimal"\nscale = 2\nmin = "0.01"', ["0.00", "0.01"], [False, True]),
        ('type = "decimal"\nscale = 2\nmax = 99.99', ["99.99", "100.00"], [True, False]),
        ('type = "float"\nmin = -1.5\nmax = 1.5', ["-1.6", "-1.5", "1.5", "1.51"], [False, True, True, False]),
        ('type = "date"\nmin = 2020-01-01\nmax = "2020-12-31"', ["2019-12-31", "2020-01-01", "2021-01-01"], [False, True, False]),
        (
            'type = "timestamp"\nmin = 2020-01-01T00:00:00Z\nmax = "2020-12-31T23:59:59+00:00"',
            ["2019-12-31 23:59:59", "2020-06-01 12:00:00", "2021-01-01 00:00:00"],
            [False, True, False],
        ),
    ],
    ids=["integer", "decimal-min", "decimal-max", "float", "date", "timestamp"],
)
def test_ranges_reject_values_outside_min_and_max(tmp_path, column, values, expected):
    got = outcomes(tmp_path, column, values)
    assert [g != ("out_of_range", "v") for g in got] == expected
    assert all(g == ("out_of_range", "v") or not isinstance(g, tuple) for g in got)


# --- booleans, dates, timestamps -----------------------------------------------------------


def test_booleans_with_the_default_spellings_in_any_case(tmp_path):
    got = outcomes(tmp_path, 'type = "boolean"', ["true", "YES", "y", "1", "False", "n", "0", "maybe"])
    assert got == [True, True, True, True, False, False, False, ("invalid_boolean", "v")]


def test_booleans_with_the_contract_s_own_spellings(tmp_path):
    column = 'type = "boolean"\ntrue_values = ["Ja"]\nfalse_values = ["Nein"]'
    assert outcomes(tmp_path, column, ["ja", "NEIN", "yes"]) == [True, False, ("invalid_boolean", "v")]


def test_dates_in_any_of_the_listed_formats(tmp_path):
    column = 'type = "date"\nformats = ["%d.%m.%Y", "%Y-%m-%d"]'
    got = outcomes(tmp_path, column, ["31.01.2024", "2024-02-29", "2023-02-29", "31.01.24", "01/31/2024"])
    bad = ("invalid_date", "v")
    assert got == [dt.date(2024, 1, 31), dt.date(2024, 2, 29), bad, bad, bad]


def test_timestamps_with_an_offset_are_exact_and_naive_ones_are_read_in_the_contract_s_zone(tmp_path):
    column = 'type = "timestamp"\ntimezone = "America/New_York"'
    got = outcomes(tmp_path, column, ["2024-01-15T10:00:00+01:00", "2024-01-15 10:00:00", "2024-07-15T10:00:00.250", "x"])
    assert got == [
        dt.datetime(2024, 1, 15, 9, tzinfo=UTC),
        dt.datetime(2024, 1, 15, 15, tzinfo=UTC),  # EST is UTC-5
        dt.datetime(2024, 7, 15, 14, 0, 0, 250_000, tzinfo=UTC),  # EDT is UTC-4
        ("invalid_timestamp", "v"),
    ]


def test_a_wall_clock_time_skipped_by_daylight_saving_is_an_invalid_timestamp_not_a_crash(tmp_path):
    column = 'type = "timestamp"\ntimezone = "Europe/Berlin"\nformats = ["%Y-%m-%d %H:%M"]'
    got = outcomes(tmp_path, column, ["2024-03-31 02:30", "2024-03-31 03:30"])
    assert got == [("invalid_timestamp", "v"), dt.datetime(2024, 3, 31, 1, 30, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("reject", ("invalid_timestamp", "v")),
        ("earliest", dt.datetime(2024, 10, 27, 0, 30, tzinfo=UTC)),  # still CEST, UTC+2
        ("latest", dt.datetime(2024, 10, 27, 1, 30, tzinfo=UTC)),  # already CET, UTC+1
    ],
)
def test_a_wall_clock_time_repeated_by_daylight_saving_follows_the_ambiguous_rule(tmp_path, rule, expected):
    column = f'type = "timestamp"\ntimezone = "Europe/Berlin"\nformats = ["%Y-%m-%d %H:%M"]\nambiguous = "{rule}"'
    assert outcomes(tmp_path, column, ["2024-10-27 02:30"]) == [expected]


# --- which reason a row gets ---------------------------------------------------------------


def test_a_row_carries_the_first_broken_rule_in_column_order_with_its_raw_text(tmp_path):
    contract = contract_from(
        tmp_path,
        '[dataset]\nname = "order"\nversion = 1\n\n'
        '[[columns]]\nname = "a"\ntype = "integer"\nmin = 0\n\n'
        '[[columns]]\nname = "b"\ntype = "string"\nallowed = ["X"]\n',
    )
    data = b"a,b\n-1,Y\nx,Y\n1,Y\n,\n"
    got = rejects(transform_bytes(data, tmp_path, contract=contract)).select("line", "reason", "column", "a", "b").rows()
    assert got == [
        (2, "out_of_range", "a", "-1", "Y"),
        (3, "invalid_number", "a", "x", "Y"),
        (4, "not_allowed", "b", "1", "Y"),
        (5, "missing_value", "a", None, None),
    ]


def test_every_row_reason_code_is_produced_and_named_in_the_manifest(tmp_path):
    contract = contract_from(
        tmp_path,
        '[dataset]\nname = "codes"\nversion = 1\n\n[schema]\nmax_invalid_share = 1.0\n\n'
        '[[columns]]\nname = "n"\ntype = "integer"\nmin = 0\n\n'
        '[[columns]]\nname = "flag"\ntype = "boolean"\n\n'
        '[[columns]]\nname = "day"\ntype = "date"\n\n'
        '[[columns]]\nname = "at"\ntype = "timestamp"\n\n'
        '[[columns]]\nname = "kind"\ntype = "string"\nallowed = ["A", "B"]\n\n'
        '[[columns]]\nname = "code"\ntype = "string"\npattern = "\\\\d+"\n',
    )
    good = "1,true,2024-01-01,2024-01-01 00:00:00,A,7"
    rows = [
        good,
        ",true,2024-01-01,2024-01-01 00:00:00,A,7",  # missing_value
        "x,true,2024-01-01,2024-01-01 00:00:00,A,7",  # invalid_number
        "-1,true,2024-01-01,2024-01-01 00:00:00,A,7",  # out_of_range
        "1,perhaps,2024-01-01,2024-01-01 00:00:00,A,7",  # invalid_boolean
        "1,true,2024-13-01,2024-01-01 00:00:00,A,7",  # invalid_date
        "1,true,2024-01-01,yesterday,A,7",  # invalid_timestamp
        "1,true,2024-01-01,2024-01-01 00:00:00,C,7",  # not_allowed
        "1,true,2024-01-01,2024-01-01 00:00:00,A,7a",  # pattern_mismatch
        "1,true,2024-01-01,2024-01-01 00:00:00,A,7,surplus",  # ragged_row
    ]
    data = ("n,flag,day,at,kind,code\n" + "\n".join(rows) + "\n").encode()
    result = transform_bytes(data, tmp_path, contract=contract)
    codes = {r["reason"] for r in result.rejects_by_reason}
    assert codes == set(ROW_REASONS)
    assert rejects(result)["reason"].to_list() == [
        "missing_value", "invalid_number", "out_of_range", "invalid_boolean", "invalid_date",
        "invalid_timestamp", "not_allowed", "pattern_mismatch", "ragged_row",
    ]  # fmt: skip
