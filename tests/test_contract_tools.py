"""The contract tooling commands, run as a person runs them: ``shared.tools.cli.main([...])``.

``infer`` drafts a contract from a sample, ``check`` dry-runs a file against a contract and
writes nothing, ``report`` prints a run's summary from a manifest, a local folder or storage.
"""

from __future__ import annotations

import codecs
import gzip
import os
import re
import tempfile
from pathlib import Path

import pytest

from shared.core.contract import load_contract
from shared.tools import samples
from shared.tools.cli import main
from tests.helpers import transform_bytes


@pytest.fixture
def cli(capsys):
    """Run the CLI; the environment it fills in from local.settings.json is put back after."""
    saved = dict(os.environ)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    yield run
    os.environ.clear()
    os.environ.update(saved)


def column_block(toml: str, name: str) -> str:
    """The lines of one [[columns]] table of a draft, comments included."""
    blocks = toml.split("\n\n")
    return next(b for b in blocks if f'name = "{name}"' in b and "[[columns]]" in b)


# --- infer ---------------------------------------------------------------------------------------


def test_infer_drafts_types_formats_nullability_allowed_values_patterns_and_keys(cli, tmp_path):
    path = samples.taxi_trips(tmp_path / "trips.csv", 4_000, seed=3, dirty=0.0, duplicates=0.0)
    code, out, _ = cli("infer", path, "--dataset", "trips")
    assert code == 0
    draft = tmp_path / "draft.toml"
    draft.write_text(out)
    contract = load_contract(draft)  # a draft always loads
    assert contract.dataset == "trips" and contract.version == 1
    types = {c.name: c.type for c in contract.columns}
    assert types == {
        "trip_id": "string", "vendor": "string", "pickup_datetime": "timestamp", "dropoff_datetime": "timestamp",
        "pickup_borough": "string", "passenger_count": "integer", "trip_distance": "decimal", "payment_type": "string",
        "fare_amount": "decimal", "tip_amount": "decimal", "total_amount": "decimal", "store_and_fwd": "boolean",
        "congestion_surcharge": "decimal",
    }  # fmt: skip
    assert contract.column("fare_amount").scale == 2
    assert contract.column("pickup_datetime").formats == ("%Y-%m-%d %H:%M:%S%.f",)
    assert contract.column("trip_id").pattern == "[A-Z]\\d{9}"
    assert contract.column("trip_id").source == "Trip ID"
    assert set(contract.column("payment_type").allowed) == {"card", "cash", "no charge", "dispute"}
    assert contract.column("trip_id").required
    assert "candidate keys (no empty value, no repeat in the sample): trip_id" in out
    # the guesses say they are guesses, with what the sample showed
    assert "# guess: naive times read as UTC" in column_block(out, "pickup_datetime")
    assert "# guess: decimal with scale 2" in column_block(out, "fare_amount")
    assert "# guess: the 4 values seen in the sample" in column_block(out, "payment_type")
    assert "# guess: required, no empty value in 4,000 sampled rows" in column_block(out, "trip_id")


def test_infer_reads_what_the_pipeline_reads_and_marks_optional_columns_and_null_tokens(cli, tmp_path):
    text = "Tag;Datum;Betrag;Notiz\r\n" + "".join(
        f"K{i % 5};{i % 28 + 1:02d}.03.2024;{i},{i % 100:02d};{'NA' if i % 4 == 0 else 'Café ' + str(i)}\r\n" for i in range(300)
    )
    data = gzip.compress(codecs.BOM_UTF16_LE + text.replace(",", ".").encode("utf-16-le"))
    path = tmp_path / "export.csv.gz"
    path.write_bytes(data)
    code, out, _ = cli("infer", path)
    assert code == 0
    (tmp_path / "d.toml").write_text(out)
    contract = load_contract(tmp_path / "d.toml")
    assert contract.dataset == "export"
    assert (contract.dialect.delimiter, contract.dialect.encoding) == (";", "utf-16")
    assert contract.column("datum").type == "date" and contract.column("datum").formats == ("%d.%m.%Y",)
    assert contract.column("betrag").type == "decimal" and contract.column("betrag").scale == 2
    assert contract.column("tag").allowed == ("K0", "K1", "K2", "K3", "K4")
    notiz = contract.column("notiz")
    assert not notiz.required and "NA" in notiz.null_values
    assert "# guess: optional, 75 of 300 sampled rows empty" in column_block(out, "notiz")


def test_infer_proposes_cp1252_when_the_bytes_say_so_and_a_case_rule_for_mixed_spellings(cli, tmp_path):
    rows = "".join(f"{['Goa', 'GOA', 'goa', 'Pune'][i % 4]},Café {i}\n" for i in range(80))
    path = tmp_path / "cities.csv"
    path.write_bytes(("City,Note\n" + rows).encode("cp1252"))
    code, out, _ = cli("infer", path, "--dataset", "cities")
    assert code == 0
    (tmp_path / "d.toml").write_text(out)
    contract = load_contract(tmp_path / "d.toml")
    assert contract.dialect.encoding == "cp1252"
    assert (contract.column("city").case, contract.column("city").allowed) == ("upper", ("GOA", "PUNE"))


def test_infer_samples_a_bounded_head_and_never_cuts_a_quoted_record(cli, tmp_path):
    record = '{i},"line one, and\nline two ""{i}""",2024-01-{d:02d}\n'
    path = tmp_path / "big.csv"
    path.write_text("id,text,day\n" + "".join(record.format(i=i, d=i % 28 + 1) for i in range(60_000)))
    code, out, _ = cli("infer", path, "--sample-mb", "0.25")
    assert code == 0
    first = out.splitlines()[0]
    rows = int(re.search(r"the first ([\d,]+) rows", first).group(1).replace(",", ""))
    assert 1_000 < rows < 60_000
    (tmp_path / "d.toml").write_text(out)
    contract = load_contract(tmp_path / "d.toml")
    assert [c.type for c in contract.columns] == ["integer", "string", "date"]
    assert "candidate keys (no empty value, no repeat in the sample): id" in out
    assert "do not fit" not in out  # no partial record at the cut


def test_infer_writes_to_out_and_never_overwrites_without_force(cli, tmp_path):
    path = samples.bank_transactions(tmp_path / "bank.csv", 2_000, seed=2)
    target = tmp_path / "contracts" / "bank_copy.toml"
    code, out, _ = cli("infer", path, "--dataset", "bank_copy", "--out", target)
    assert code == 0 and "wrote" in out and target.exists()
    assert load_contract(target).dataset == "bank_copy"
    target.write_text("# mine\n")
    code, _, err = cli("infer", path, "--dataset", "bank_copy", "--out", target)
    assert code == 2 and "exists" in err and target.read_text() == "# mine\n"
    assert cli("infer", path, "--dataset", "bank_copy", "--out", target, "--force")[0] == 0


def test_a_draft_checks_clean_against_the_file_it_came_from(cli, tmp_path):
    path = samples.taxi_trips(tmp_path / "clean.csv", 3_000, seed=9, dirty=0.0, duplicates=0.0)
    cli("infer", path, "--dataset", "clean_trips", "--out", tmp_path / "c.toml")
    code, out, _ = cli("check", path, "--contract", tmp_path / "c.toml", "--fail-on-rejects")
    assert code == 0, out
    assert "rows read 3,000 = valid 3,000 + rejected 0 + duplicate 0" in out


# --- check ---------------------------------------------------------------------------------------


def test_check_prints_the_summary_and_the_first_rejected_rows_with_line_reason_column_and_raw_value(cli, tmp_path):
    data = (
        "Date,Domain,Location,Value,Transaction_count\n"
        "1/1/2022,RETAIL,Goa,5,1\n"
        "1/2/2022,RETAIL,Goa,12x,1\n"
        "13/45/2022,RETAIL,Goa,5,1\n"
        "1/3/2022,RETAIL,Goa,,1\n"
        "1/4/2022,RETAIL,Goa,5,1,surplus\n"
        "1/5/2022,RETAIL,Goa,-1,1\n"
    )
    path = tmp_path / "day.csv"
    path.write_text(data)
    before = set(Path(tempfile.gettempdir()).glob("check-*"))
    code, out, _ = cli("check", path, "--dataset", "bank_transactions", "--limit", "4")
    assert code == 0
    assert "dry run (nothing written)" in out.splitlines()[0]
    assert "rows read 6 = valid 1 + rejected 5 + duplicate 0" in out
    assert "rejected rows (first 4 of 5, by line):" in out
    lines = [x.split() for x in out.splitlines() if x.strip().startswith("line ")]
    assert lines == [
        ["line", "3", "invalid_number", "value", "'12x'"],
        ["line", "4", "invalid_date", "txn_date", "'13/45/2022'"],
        ["line", "5", "missing_value", "value", "(empty)"],
        ["line", "6", "ragged_row", "(row)", "'surplus'"],
    ]
    # nothing written: no file next to the input, no scratch folder left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day.csv"]
    assert set(Path(tempfile.gettempdir()).glob("check-*")) == before
    assert cli("check", path, "--dataset", "bank_transactions", "--fail-on-rejects")[0] == 1


def test_check_says_when_a_whole_file_would_be_refused(cli, tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("Date,Domain,Location\n1/1/2022,RETAIL,Goa\n")
    code, out, _ = cli("check", path, "--dataset", "bank_transactions")
    assert code == 1
    assert "refused: missing_columns" in out and "Value" in out and "quarantine" in out


def test_check_needs_to_know_which_contract(cli, tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a\n1\n")
    code, _, err = cli("check", path)
    assert code == 2 and "--dataset NAME or --contract PATH" in err and len(err.splitlines()) == 1
    code, _, err = cli("check", path, "--dataset", "nope")
    assert code == 2 and "no contract for dataset 'nope'" in err and len(err.splitlines()) == 1


def test_check_runs_the_same_transform_as_the_pipeline(cli, tmp_path):
    path = samples.bank_transactions(tmp_path / "s.csv", 5_000, seed=4, dirty=0.05)
    result = transform_bytes(path.read_bytes(), tmp_path / "t")
    code, out, _ = cli("check", path, "--dataset", "bank_transactions", "--limit", "0")
    assert code == 0
    assert (
        f"rows read {result.rows_read:,} = valid {result.rows_valid:,} + rejected {result.rows_rejected:,}"
        f" + duplicate {result.rows_duplicate:,}"
    ) in out


# --- report --------------------------------------------------------------------------------------


def test_report_prints_a_run_from_its_manifest_or_from_a_local_folder(cli, tmp_path):
    path = samples.bank_transactions(tmp_path / "day-1.csv", 3_000, seed=5, dirty=0.02)
    code, processed, _ = cli("process", path, "--dataset", "bank_transactions", "--out", tmp_path / "store")
    assert code == 0
    [manifest] = (tmp_path / "store" / "curated" / "bank_transactions" / "manifests").rglob("*.json")
    code, from_file, _ = cli("report", manifest)
    assert code == 0 and from_file.strip() == processed.strip().rsplit("\n", 1)[0].strip()
    code, from_folder, _ = cli(
        "report", "bank_transactions/day-1.csv", "--folder", tmp_path / "store", "--html", tmp_path / "r.html"
    )
    assert code == 0 and from_folder.startswith(from_file.strip())
    assert "<svg" in (tmp_path / "r.html").read_text()


def test_report_finds_the_latest_run_of_a_blob_in_storage_refused_or_not(cli, services, tmp_path):
    from tests.test_end_to_end import run_host, upload

    azurite, _ = services
    upload(azurite, "bank_transactions/feed.csv", b"Date,Domain\n1/1/2022,RETAIL\n")  # refused: columns missing
    run_host()
    code, out, _ = cli("report", "raw/bank_transactions/feed.csv")
    assert code == 1 and "refused: missing_columns" in out

    good = samples.bank_transactions(tmp_path / "feed.csv", 2_000, seed=6)
    upload(azurite, "bank_transactions/feed.csv", good.read_bytes())  # a corrected version
    run_host()
    code, out, _ = cli("report", "bank_transactions/feed.csv")
    assert code == 0 and "· succeeded · contract v1" in out and "rows read 2,000" in out
    code, _, err = cli("report", "bank_transactions/never-seen.csv")
    assert code == 1 and "no run" in err


def test_infer_names_columns_safely_and_refuses_a_header_the_pipeline_would_refuse(cli, tmp_path):
    names = tmp_path / "names.csv"
    names.write_text("1st col,select,Ünïcode,,Ünïcode!\n1,2,3,4,5\n", encoding="utf-8")
    code, out, _ = cli("infer", names)
    assert code == 0
    (tmp_path / "d.toml").write_text(out)
    contract = load_contract(tmp_path / "d.toml")
    assert [c.name for c in contract.columns] == ["c_1st_col", "select", "unicode", "unicode_2"]
    assert "1 column(s) of the file have no header name" in out
    twice = tmp_path / "twice.csv"
    twice.write_text("City,city \nGoa,Pune\n")
    code, _, err = cli("infer", twice)
    assert code == 1 and "unexpected_columns" in err and "twice" in err


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_a_cut_sample_keeps_whole_records_whatever_the_line_ends(cli, tmp_path, eol):
    path = tmp_path / "cut.csv"
    rows = "".join(f'{i},"a {i}{eol}b",2024-01-{i % 28 + 1:02d}{eol}' for i in range(20_000))
    path.write_bytes(f"id,text,day{eol}{rows}".encode())
    code, out, _ = cli("infer", path, "--sample-mb", "0.1")
    assert code == 0 and "the first" in out.splitlines()[0]
    assert "do not fit" not in out and "# guess: optional" not in out  # no partial record at the cut


def test_infer_says_why_it_cannot_read_a_file(cli, tmp_path):
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 1000)[:40] + b"\xff" * 40)
    code, _, err = cli("infer", broken)
    assert code == 1 and "undecodable" in err
    assert cli("infer", tmp_path / "missing.csv")[0] == 2


def test_infer_reads_a_sample_whose_first_row_has_surplus_fields(cli, tmp_path):
    path = tmp_path / "surplus.csv"
    path.write_text("a,b\n1,2,3,4\n" + "5,6\n" * 50)
    code, out, _ = cli("infer", path)
    assert code == 0 and 'name = "b"' in out


def test_infer_on_a_one_column_file_drafts_an_auto_delimiter_that_keeps_commas(cli, tmp_path):
    sample = tmp_path / "remarks.csv"
    sample.write_bytes(b"remark\nfine\nlate, again\n")
    code, out, _ = cli("infer", sample, "--dataset", "remarks")
    assert code == 0 and 'delimiter = "auto"' in out and "\\u0000" not in out
    draft = tmp_path / "draft.toml"
    draft.write_text(out)
    result = transform_bytes(sample.read_bytes(), tmp_path, contract=load_contract(draft))
    assert (result.rows_valid, result.rows_rejected) == (2, 0)
