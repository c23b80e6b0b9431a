"""The csv-spectrum corpus: every file parses to exactly the records its JSON lists.

csv-spectrum (BSD-2-Clause, see tests/data/csv-spectrum/NOTICE) pairs small CSV inputs
(quoted commas, escaped quotes, quoted newlines with LF and CRLF, empty quoted fields, UTF-8,
JSON inside a field) with the records a correct parser yields. Each file goes through the
pipeline's real path, ``source.split`` then ``transform.run``, under a contract that keeps the
text as it is: every column a string, optional, untrimmed, with no null tokens, so "" stays "".
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from pathlib import Path

import polars as pl
import pytest

from shared.core import source, transform
from shared.core.contract import Contract, load_contract

CORPUS = Path(__file__).resolve().parent / "data" / "csv-spectrum"
NAMES = sorted(p.stem for p in (CORPUS / "csvs").glob("*.csv"))


def column_name(header: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", header.strip().casefold()).strip("_")


def string_contract(tmp_path: Path, headers: list[str]) -> Contract:
    """A contract that keeps every field's text exactly: string, optional, untrimmed, no null token."""
    lines = ['[dataset]\nname = "spectrum"\nversion = 1\n', '[csv]\ndelimiter = ","\nnull_values = []\n']
    for h in headers:
        lines.append(
            f"[[columns]]\nname = {json.dumps(column_name(h))}\nsource = {json.dumps(h)}\n"
            'type = "string"\nrequired = false\ntrim = false\n'
        )
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "spectrum.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return load_contract(path)


def expected_records(name: str) -> list[dict[str, str]]:
    return json.loads((CORPUS / "json" / f"{name}.json").read_text(encoding="utf-8"))


FORMS = {
    "as-is": lambda data: data,
    "bom": lambda data: codecs.BOM_UTF8 + data,
    "utf16": lambda data: codecs.BOM_UTF16_LE + data.decode("utf-8").encode("utf-16-le"),
    "gzip": gzip.compress,
}


def parse(
    name: str, tmp_path: Path, *, form: str = "as-is", delimiter: str | None = ",", chunk_bytes: int = 32 * 1024 * 1024
) -> tuple[list[dict[str, str]], transform.Result]:
    raw = (CORPUS / "csvs" / f"{name}.csv").read_bytes()
    headers = next(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    contract = string_contract(tmp_path, headers)
    data = FORMS[form](raw)
    src = source.split(
        [data[i : i + 5] for i in range(0, len(data), 5)],  # tiny blocks: every boundary case of the splitter
        tmp_path / "chunks",
        delimiter=delimiter,
        quote=contract.dialect.quote,
        encoding=contract.dialect.encoding,
        chunk_bytes=chunk_bytes,
    )
    result = transform.run(contract, src, tmp_path / "out", transform.Lineage("spectrum/x.csv", "run-1"))
    clean = pl.read_parquet(result.outputs.clean).sort("_line")
    rows = [{h: row[column_name(h)] for h in headers} for row in clean.iter_rows(named=True)]
    return rows, result


def test_the_corpus_is_complete_and_the_crlf_files_really_have_crlf():
    assert len(NAMES) == 12
    assert {p.stem for p in (CORPUS / "json").glob("*.json")} == set(NAMES)
    for name in ("newlines_crlf", "simple_crlf", "empty_crlf"):
        data = (CORPUS / "csvs" / f"{name}.csv").read_bytes()
        assert data.count(b"\r\n") == data.count(b"\n") > 0, name


@pytest.mark.parametrize("name", NAMES)
def test_each_file_parses_to_exactly_its_expected_records(name, tmp_path):
    rows, result = parse(name, tmp_path)
    expected = expected_records(name)
    assert rows == expected
    counts = (result.rows_read, result.rows_valid, result.rows_rejected, result.rows_duplicate)
    assert counts == (len(expected), len(expected), 0, 0)


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name", NAMES)
def test_each_file_parses_the_same_whatever_the_encoding_compression_or_chunking(name, form, tmp_path):
    expected = expected_records(name)
    assert parse(name, tmp_path, form=form)[0] == expected
    assert parse(name, tmp_path / "auto", form=form, delimiter=None)[0] == expected  # the delimiter detected
    assert parse(name, tmp_path / "small", form=form, chunk_bytes=8)[0] == expected  # a chunk per record
