"""CSV as it really arrives: compression, encodings, line ends, NUL bytes, quoted newlines."""

from __future__ import annotations

import codecs
import gzip

import pytest

from shared.core import source
from shared.core.errors import FileRefused
from tests.helpers import clean_rows, rejects, transform_bytes

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


# --- more of CSV as it really arrives (contracts and data quality) --------------------------------


def bank_with(**changes: object):
    """The bank contract with another dialect: same columns, rules and aggregates."""
    from dataclasses import replace

    from tests.helpers import BANK

    return replace(BANK, dialect=replace(BANK.dialect, **changes))


QUOTED = 'Date,Domain,Location,Value,Transaction_count\n1/1/2022,RETAIL,"Goa, ""North""\nbeach",5,1\n1/2/2022,PUBLIC,"Pune",7,2\n'
QUOTED_EXPECTED = [("RETAIL", 'Goa, "North"\nbeach', 5, 1), ("PUBLIC", "Pune", 7, 2)]


@pytest.mark.parametrize(
    ("data", "location"),
    [
        (QUOTED.encode(), 'Goa, "North"\nbeach'),
        (QUOTED.replace("\n", "\r\n").encode(), 'Goa, "North"\r\nbeach'),  # CRLF, inside the quotes too
        (QUOTED.replace("\n", "\r").encode(), 'Goa, "North"\rbeach'),  # lone CR, inside the quotes too
        (codecs.BOM_UTF8 + QUOTED.encode(), 'Goa, "North"\nbeach'),
        (gzip.compress(codecs.BOM_UTF8 + QUOTED.replace("\n", "\r\n").encode()), 'Goa, "North"\r\nbeach'),
        (QUOTED.encode("utf-16-be"), 'Goa, "North"\nbeach'),  # big-endian without a BOM
        (codecs.BOM_UTF16_BE + QUOTED.encode("utf-16-be"), 'Goa, "North"\nbeach'),
        (gzip.compress(QUOTED[:60].encode()) + gzip.compress(QUOTED[60:].encode()), 'Goa, "North"\nbeach'),  # two members
    ],
    ids=["lf", "crlf", "cr", "bom", "gzip-bom-crlf", "utf16be", "utf16be-bom", "gzip-two-members"],
)
def test_quoted_fields_keep_their_delimiters_quotes_and_line_ends(tmp_path, data, location):
    result = transform_bytes(data, tmp_path)
    assert parsed(result) == [("RETAIL", location, 5, 1), ("PUBLIC", "Pune", 7, 2)]


def test_latin_1_is_read_as_latin_1_when_the_contract_says_so_even_if_the_bytes_look_like_utf8(tmp_path):
    data = ROWS.replace("Goa", "Goa \u00c3\u00a9").encode("latin-1")  # the bytes of "Goa é" in UTF-8
    assert parsed(transform_bytes(data, tmp_path))[0][1] == "Goa é"  # auto: valid UTF-8 is UTF-8
    assert parsed(transform_bytes(data, tmp_path / "l1", contract=bank_with(encoding="latin-1")))[0][1] == "Goa Ã©"


def test_windows_1252_when_the_contract_says_so(tmp_path):
    data = ROWS.replace("Goa", "Goa \u20ac").encode("cp1252")  # the euro sign is 0x80 in cp1252
    assert parsed(transform_bytes(data, tmp_path, contract=bank_with(encoding="cp1252")))[0][1] == "Goa €"


def test_bytes_that_are_not_the_declared_encoding_refuse_the_file(tmp_path):
    data = ROWS.encode("utf-16")
    with pytest.raises(FileRefused) as refused:
        transform_bytes(ROWS.encode() + b"1/3/2022,RETAIL,Caf\xe9,5,1\n", tmp_path, contract=bank_with(encoding="utf-8"))
    assert refused.value.code == "undecodable"
    assert parsed(transform_bytes(data, tmp_path / "u16", contract=bank_with(encoding="utf-16"))) == EXPECTED


@pytest.mark.parametrize("delimiter", ["\t", "|", ";"])
def test_tab_pipe_and_semicolon_files_are_detected_and_commas_in_values_stay_text(tmp_path, delimiter):
    data = ROWS.replace(",", delimiter).replace("Pune", "Pune, Maharashtra").encode()
    got = parsed(transform_bytes(data, tmp_path, contract=bank_with(delimiter=None)))
    assert got == [("RETAIL", "Goa", 5, 1), ("PUBLIC", "Pune, Maharashtra", 7, 2)]


def test_with_quoting_off_a_quote_is_an_ordinary_character(tmp_path):
    data = ROWS.replace("Goa", 'Goa "North').encode()
    assert parsed(transform_bytes(data, tmp_path, contract=bank_with(quote=None)))[0][1] == 'Goa "North'


def test_nul_bytes_are_removed_and_counted(tmp_path):
    data = ROWS.encode().replace(b"Goa", b"G\x00o\x00a")
    src = source.split([data], tmp_path / "c")
    assert src.notes == {"nul_bytes_removed": 2}


def test_too_many_fields_is_ragged_but_a_trailing_empty_field_is_not(tmp_path):
    data = ROWS.replace("Goa,5,1", "Goa,5,1,").replace("Pune,7,2", "Pune,7,2,oops").encode()
    result = transform_bytes(data, tmp_path)
    assert parsed(result) == [("RETAIL", "Goa", 5, 1)]
    assert [(r["reason"], r["column"]) for r in result.rejects_by_reason] == [("ragged_row", None)]


TOO_FEW = (
    "Date,Domain,Location,Value,Transaction_count\n"
    "1/1/2022,RETAIL,Goa,5,1\n"
    "1/2/2022,RETAIL,Goa,5\n"  # line 3: four fields of five
    "1/3/2022,RETAIL\n"  # line 4: two fields
    "\n"  # line 5: a blank line is one empty field
    "1/4/2022,RETAIL,Goa,6,\n"  # line 6: five fields, the last one empty: missing_value, not ragged
)


def test_too_few_fields_is_a_ragged_row_whatever_the_columns_allow(tmp_path):
    result = transform_bytes(TOO_FEW.encode(), tmp_path)
    got = rejects(result).select("line", "reason", "column").rows()
    assert got == [
        (3, "ragged_row", None),
        (4, "ragged_row", None),
        (5, "ragged_row", None),
        (6, "missing_value", "transaction_count"),
    ]


def test_a_short_row_is_never_accepted_with_its_missing_optional_columns_as_null(tmp_path):
    from tests.helpers import contract_from

    contract = contract_from(
        tmp_path,
        '[dataset]\nname = "short"\nversion = 1\n\n[[columns]]\nname = "id"\ntype = "integer"\n\n'
        '[[columns]]\nname = "note"\ntype = "string"\nrequired = false\n\n'
        '[[columns]]\nname = "tag"\ntype = "string"\nrequired = false\n',
    )
    result = transform_bytes(b"id,note,tag\n1,a,b\n2,a\n3,a,\n4\n", tmp_path, contract=contract)
    assert clean_rows(result).select("_line", "id", "note", "tag").rows() == [(2, 1, "a", "b"), (4, 3, "a", None)]
    assert rejects(result).select("line", "reason").rows() == [(3, "ragged_row"), (5, "ragged_row")]


def test_the_line_of_a_rejected_row_is_its_line_in_the_file_after_a_quoted_newline(tmp_path):
    data = (
        b"Date,Domain,Location,Value,Transaction_count\n"
        b'1/1/2022,RETAIL,"Goa\nNorth\nBeach",5,1\n'  # lines 2 to 4
        b"1/2/2022,RETAIL,Goa,x,1\n"  # line 5
    )
    assert rejects(transform_bytes(data, tmp_path))["line"].to_list() == [5]


def test_a_short_row_after_a_quoted_newline_is_ragged_at_its_own_line(tmp_path):
    data = (
        b"Date,Domain,Location,Value,Transaction_count\r\n"
        b'1/1/2022,RETAIL,"Goa\r\nNorth",5,1\r\n'  # lines 2 and 3
        b"1/2/2022,RETAIL,Goa,5\r\n"  # line 4: four fields
        b"1/3/2022,RETAIL,Goa,x,1\r\n"  # line 5
    )
    got = rejects(transform_bytes(data, tmp_path)).select("line", "reason").rows()
    assert got == [(4, "ragged_row"), (5, "invalid_number")]


@pytest.mark.parametrize("where", ["first row", "first row of a later chunk"])
def test_two_surplus_fields_in_the_first_row_of_a_chunk_are_ragged_not_a_crash(tmp_path, where):
    good = b"1/2/2022,RETAIL,Goa,5,1\n"
    surplus = b"1/1/2022,RETAIL,Goa,5,1,x,y\n"
    body = surplus + good * 10 if where == "first row" else good * 300 + surplus + good * 300
    result = transform_bytes(b"Date,Domain,Location,Value,Transaction_count\n" + body, tmp_path, chunk_bytes=300 * len(good))
    assert [(r["reason"], r["rows"]) for r in result.rejects_by_reason] == [("ragged_row", 1)]


def test_a_one_column_file_keeps_commas_in_its_values_when_the_delimiter_is_left_to_the_file(tmp_path):
    from tests.helpers import contract_from

    contract = contract_from(tmp_path, '[dataset]\nname = "one"\nversion = 1\n\n[[columns]]\nname = "remark"\ntype = "string"\n')
    result = transform_bytes(b"remark\nfine\nlate, again\n", tmp_path, contract=contract)
    assert clean_rows(result)["remark"].to_list() == ["fine", "late, again"]


def test_every_arrival_form_lands_in_postgresql_as_the_same_rows(services, tmp_path):
    """The forms above, each dropped into raw as its own file: the view counts each file once."""
    from tests import oracle
    from tests.test_end_to_end import ledger, run_host, upload, view_rows

    azurite, dsn = services
    plain = (
        "Date,Domain,Location,Value,Transaction_count\n"
        '1/1/2022,RETAIL,"Goa, ""North"" café",5,1\n1/2/2022,PUBLIC,Pune,7,2\n1/2/2022,PUBLIC,Pune,9,1\n'
    )
    (tmp_path / "plain.csv").write_text(plain, encoding="utf-8")
    forms = {
        "crlf.csv": plain.replace("\n", "\r\n").encode(),
        "cr.csv": plain.replace("\n", "\r").encode(),
        "bom.csv": codecs.BOM_UTF8 + plain.encode(),
        "utf16.csv": plain.encode("utf-16"),
        "nul.csv": plain.encode().replace(b"Pune", b"Pu\x00ne"),
        "zipped.csv.gz": gzip.compress(plain.encode()),
        "cp1252.csv": plain.encode("cp1252"),
        "shuffled.csv": "Value,Location,Transaction_count,Domain,Date,Extra\n"
        '5,"Goa, ""North"" café",1,RETAIL,1/1/2022,x\n7,Pune,2,PUBLIC,1/2/2022,y\n9,Pune,1,PUBLIC,1/2/2022,z\n'.encode(),
    }
    for name, data in forms.items():
        upload(azurite, f"bank_transactions/forms/{name}", data)

    stats = run_host()

    assert stats.failures == 0
    assert {r["status"] for r in ledger(dsn)} == {"loaded"} and len(ledger(dsn)) == len(forms)
    expected = oracle.bank(tmp_path / "plain.csv")
    total = expected
    for _ in range(len(forms) - 1):
        total = total.add(expected)
    assert view_rows(dsn) == total.view_rows()


def test_a_stray_nul_byte_in_a_small_file_is_removed_and_counted_not_taken_for_binary():
    src = source.open_source(iter([b"a,b\n1\x00,2\n"]), delimiter=",", quote='"', encoding="auto", chunk_bytes=1 << 20)
    assert b"".join(src.segments()) == b"1,2\n"
    assert src.notes == {"nul_bytes_removed": 1}


@pytest.mark.parametrize("bom", [b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf\r\n"])
def test_a_file_of_only_a_byte_order_mark_is_empty_not_binary(bom):
    with pytest.raises(FileRefused) as refused:
        source.open_source(iter([bom]), delimiter=",", quote='"', encoding="auto", chunk_bytes=1 << 20)
    assert refused.value.code == "empty_file"
