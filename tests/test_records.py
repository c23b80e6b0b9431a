"""Records counted from the bytes (``shared.core.records``), and the transform's use of them: each row's
physical line and whether it has the header's number of fields, against Python's own count."""

from __future__ import annotations

import random

import numpy as np
import pytest

from shared.core import records
from tests.helpers import clean_rows, contract_from, rejects, transform_bytes

HEADER = b"Date,Domain,Location,Value,Transaction_count\n"
GOOD = b"1/2/2022,RETAIL,Goa,5,1\n"


def test_census_counts_line_ends_and_the_delimiters_outside_quotes():
    segment = b'a,"b,c",d\n"x\ny",,\n"",z,"q""r,s"\n'
    got = records.census(segment, ",", '"', "\n")
    assert got.quoted_line_ends == 1
    assert got.delimiters == 6  # the commas inside "b,c" and "q""r,s" are not delimiters
    assert got.quotes.tolist() == [i for i, b in enumerate(segment) if b == ord('"')]


def test_census_gives_up_counting_when_too_much_is_quoted(monkeypatch):
    monkeypatch.setattr(records, "QUOTED_CHEAP", 3)
    assert records.census(b'"abcd",e\n', ",", '"', "\n").delimiters is None
    assert records.census(b'"abcd",e\n', ",", '"', "\n").quoted_line_ends is None
    assert records.census(b'"abc",e\n', ",", '"', "\n").delimiters == 1


def test_layout_gives_each_records_first_line_and_fields():
    segment = b'a,"b,c",d\n"x\ny",,\n\n"",z,"q""r,s",t\n'
    census = records.census(segment, ",", '"', "\n")
    lines, first, fields = records.layout(segment, ",", '"', "\n", census.quotes, fields=True)
    assert lines == 5 and first.tolist() == [0, 1, 3, 4]
    assert fields is not None and fields.tolist() == [3, 3, 1, 4]
    lines, first, fields = records.layout(segment, ",", None, "\n", np.zeros(0, np.int64), fields=True)
    assert first.tolist() == [0, 1, 2, 3, 4] and fields is not None and fields.tolist() == [4, 1, 3, 1, 5]


def test_layout_counts_across_its_blocks(monkeypatch):
    monkeypatch.setattr(records, "BLOCK", 7)
    segment = b'a,b,c\n"d\n,e",f\n,,,,\ng\n' * 5
    census = records.census(segment, ",", '"', "\n")
    lines, first, fields = records.layout(segment, ",", '"', "\n", census.quotes, fields=True)
    assert lines == 25 and first.tolist() == [i + k for i in range(0, 25, 5) for k in (0, 1, 3, 4)]
    assert fields is not None and fields.tolist() == [3, 2, 5, 1] * 5


def test_surplus_fields_after_an_empty_first_surplus_field_are_ragged(tmp_path):
    data = HEADER + b"1/1/2022,RETAIL,Goa,5,1,,x\n1/2/2022,RETAIL,Goa,5,1,\n1/3/2022,RETAIL,Goa,5,1,,\n"
    result = transform_bytes(data, tmp_path)
    assert clean_rows(result)["_line"].to_list() == [3]
    assert rejects(result).select("line", "reason", "extra_fields").rows() == [(2, "ragged_row", None), (4, "ragged_row", None)]


def test_a_short_row_is_ragged_when_its_missing_columns_are_read_through_a_dictionary(tmp_path):
    """Date, Domain and Location repeat, so they are parsed as Categorical (``shared.core.dictionary``)."""
    data = HEADER + GOOD * 400 + b"1/1/2022,RETAIL\n" + GOOD.replace(b"Goa", b"Pune") * 10 + b"\n" + GOOD
    result = transform_bytes(data, tmp_path, chunk_bytes=4096)
    assert "location" in result.notes["dictionary_columns"]
    assert rejects(result).select("line", "reason").rows() == [(402, "ragged_row"), (413, "ragged_row")]
    assert result.rows_read == 413 and result.rows_rejected == 2


def test_an_empty_quoted_field_is_a_field_and_a_blank_line_in_a_one_column_file_is_one(tmp_path):
    data = HEADER + b'1/1/2022,RETAIL,Goa,5,""\n'
    assert rejects(transform_bytes(data, tmp_path)).select("line", "reason", "column").rows() == [
        (2, "missing_value", "transaction_count")
    ]
    one = contract_from(tmp_path, '[dataset]\nname = "one"\nversion = 1\n\n[[columns]]\nname = "remark"\ntype = "string"\n')
    result = transform_bytes(b"remark\nfine\n\nlate\n", tmp_path / "one", contract=one)
    assert rejects(result).select("line", "reason").rows() == [(3, "missing_value")]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_lines_follow_quoted_line_ends_and_blank_lines_across_segments(tmp_path, eol):
    body = f'1/1/2022,RETAIL,"Goa{eol}North{eol}Beach",5,1{eol}{eol}1/2/2022,RETAIL,Goa,x,1{eol}1/3/2022,PUBLIC,Pune,7,2{eol}'
    data = ("Date,Domain,Location,Value,Transaction_count" + eol + body * 40).encode()
    result = transform_bytes(data, tmp_path, chunk_bytes=100)
    assert result.rows_read == 160
    lines = [2 + 6 * i for i in range(40)]
    assert rejects(result).select("line", "reason").rows() == [
        (line + k, reason) for line in lines for k, reason in ((3, "ragged_row"), (4, "invalid_number"))
    ]
    assert clean_rows(result)["_line"].to_list() == [2, 7]  # the rest are duplicates of these two


def messy_csv(seed: int, n: int, eol: str, rows: int, tidy: bool) -> tuple[str, list[tuple[int, bool | None]]]:
    """Records of random width (blank lines too), empty and quoted fields holding delimiters,
    quotes and line ends; with each record's line and whether it has the wrong number of fields
    (None: a row of one column's blank line after the first, a duplicate). ``tidy``: no empty
    field and no row past one surplus field, so that the totals settle most segments."""
    rng = random.Random(seed)
    values = ["x", "plain text", '"a,b"', f'"multi{eol}line"', '""', '"say ""hi"""', f'"{eol}{eol}"', '","']
    widths = [n - 2, n - 1, n, n, n, n, n, n + 1]
    if not tidy:
        values += ["", ""]
        widths += [n + 1, n + 2, n + 3]
    text = [",".join(f"c{i}" for i in range(n)) + eol]
    expected: list[tuple[int, bool | None]] = []
    line, blank = 2, False
    for i in range(rows):
        if rng.random() < 0.05:
            fields = [""]  # a blank line
        else:
            k = max(1, rng.choice(widths))
            fields = [f"id{i}"] + [rng.choice(values) for _ in range(k - 1)]
        k = len(fields)
        ragged = k < n or k > n + 1 or (k == n + 1 and fields[-1] != "")
        expected.append((line, None if fields == [""] and not ragged and blank else ragged))
        blank = blank or (fields == [""] and not ragged)
        record = ",".join(fields) + eol
        text.append(record)
        line += record.count(eol)
    return "".join(text), expected


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("quoted_cheap", [records.QUOTED_CHEAP, -1], ids=["census", "layout"])
@pytest.mark.parametrize(("n", "chunk"), [(4, 300), (2, 120), (1, 200)])
@pytest.mark.parametrize("tidy", [False, True], ids=["messy", "tidy"])
def test_lines_and_ragged_rows_match_pythons_count_of_random_csv(tmp_path, monkeypatch, eol, quoted_cheap, n, chunk, tidy):
    monkeypatch.setattr(records, "QUOTED_CHEAP", quoted_cheap)
    columns = "".join(f'\n[[columns]]\nname = "c{i}"\ntype = "string"\nrequired = false\n' for i in range(n))
    contract = contract_from(tmp_path, f'[dataset]\nname = "messy"\nversion = 1\n\n[csv]\ndelimiter = ","\n{columns}')
    for seed in range(3):
        text, expected = messy_csv(seed, n, eol, 300, tidy)
        result = transform_bytes(text.encode(), tmp_path / str(seed), contract=contract, chunk_bytes=chunk)
        assert result.rows_read == len(expected)
        got = rejects(result).select("line", "reason").rows()
        assert got == [(line, "ragged_row") for line, ragged in expected if ragged]
        assert clean_rows(result)["_line"].to_list() == [line for line, ragged in expected if ragged is False]


def test_the_bank_contract_reads_the_same_rows_with_and_without_the_fast_path(tmp_path, monkeypatch):
    """A segment whose totals settle it takes the fast path; ``layout`` must agree with it."""
    data = HEADER + (GOOD + b'1/3/2022,PUBLIC,"Pune, ""West""",7,2\n' + b"1/4/2022,PUBLIC,Pune,7\n") * 300
    fast = transform_bytes(data, tmp_path / "fast", chunk_bytes=2048)
    monkeypatch.setattr(records, "QUOTED_CHEAP", -1)  # every segment through layout
    slow = transform_bytes(data, tmp_path / "slow", chunk_bytes=2048)
    assert rejects(fast).select("line", "reason").rows() == rejects(slow).select("line", "reason").rows()
    assert rejects(fast).height == 300
    assert clean_rows(fast).equals(clean_rows(slow))
