"""CSV as it really arrives: compression, encodings, line ends, NUL bytes, quoted newlines."""

from __future__ import annotations

import codecs
import gzip

import pytest

from shared import source
from shared.faults import FileRefused
from tests.helpers import clean_rows, transform_bytes

ROWS = "Date,Domain,Location,Value,Transaction_count\n1/1/2022,RETAIL,Goa,5,1\n1/2/2022,PUBLIC,Pune,7,2\n"
EXPECTED = [("RETAIL", "Goa", 5, 1), ("PUBLIC", "Pune", 7, 2)]


def parsed(result) -> list[tuple]:
    return clean_rows(result).select("domain", "location", "value", "transaction_count").rows()


@pytest.mark.parametrize(
    "data",
    [
        ROWS.encode(),
        ROWS.replace("\n", "\r\n").encode(),  # CRLF
        ROWS.replace("\n", "\r").encode(),  # lone CR (old Mac)
        codecs.BOM_UTF8 + ROWS.encode(),
        ROWS.encode("utf-16"),  # with BOM
        ROWS.encode("utf-16-le"),  # without BOM: detected from the NUL pattern
        gzip.compress(ROWS.encode()),
        gzip.compress(ROWS.encode("utf-16")),
        ROWS.encode().replace(b"Goa", b"G\x00oa"),  # a stray NUL byte
        ROWS.rstrip("\n").encode(),  # no final line end
    ],
    ids=["utf8", "crlf", "cr", "bom", "utf16", "utf16-no-bom", "gzip", "gzip-utf16", "nul", "no-final-newline"],
)
def test_every_arrival_form_parses_to_the_same_rows(tmp_path, data):
    assert parsed(transform_bytes(data, tmp_path)) == EXPECTED


def test_windows_1252_is_detected_when_the_bytes_are_not_utf8(tmp_path):
    data = ROWS.replace("Goa", "Goa Café").encode("cp1252")
    result = transform_bytes(data, tmp_path)
    assert parsed(result)[0][1] == "Goa Café"


def test_a_late_invalid_utf8_sequence_refuses_the_file_as_undecodable(tmp_path):
    good = "1/1/2022,RETAIL,Goa,5,1\n" * 20_000  # well past the detection sample
    data = ("Date,Domain,Location,Value,Transaction_count\n" + good).encode() + b"1/1/2022,RETAIL,Caf\xe9,5,1\n"
    with pytest.raises(FileRefused) as refused:
        transform_bytes(data, tmp_path)
    assert refused.value.code == "undecodable"


def test_a_truncated_gzip_stream_is_refused(tmp_path):
    whole = gzip.compress((ROWS + "1/3/2022,RETAIL,Goa,5,1\n" * 500).encode())
    data = whole[: len(whole) // 2]  # an upload cut short
    with pytest.raises(FileRefused) as refused:
        transform_bytes(data, tmp_path)
    assert refused.value.code == "undecodable"


def test_chunks_never_split_a_quoted_record(tmp_path):
    record = '1/1/2022,RETAIL,"Goa, North\nsecond line ""quoted""",5,1\n'
    data = ("Date,Domain,Location,Value,Transaction_count\n" + record * 3_000).encode()
    src = source.split([data[i : i + 1000] for i in range(0, len(data), 1000)], tmp_path / "c", chunk_bytes=4096)
    assert len(src.chunks) > 10
    for chunk in src.chunks:
        assert chunk.read_bytes().count(b'"') % 2 == 0
    result = transform_bytes(data, tmp_path / "t", chunk_bytes=4096)
    assert result.rows_read == 3_000 and result.rows_duplicate == 2_999
    assert parsed(result)[0][1] == 'Goa, North\nsecond line "quoted"'


def test_the_delimiter_is_detected_when_the_contract_leaves_it_to_the_file(tmp_path):
    from tests.helpers import BANK

    auto = type(BANK)(**{**BANK.__dict__, "dialect": type(BANK.dialect)(delimiter=None)})
    data = ROWS.replace(",", ";").encode()
    assert parsed(transform_bytes(data, tmp_path, contract=auto)) == EXPECTED
