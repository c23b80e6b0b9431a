"""Contracts are validated when loaded: a broken one names the file, the line and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.core.contract import ContractError, load_contract, load_contracts

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = """\
[dataset]
name = "trips"
version = 2

[[columns]]
name = "fare"
type = "decimal"
scale = 2

[[columns]]
name = "city"
type = "string"

[[aggregates]]
name = "by_city"
group_by = ["city"]
metrics = [{ name = "fares", op = "sum", column = "fare" }]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trips.toml"
    path.write_text(text)
    return path


def test_every_bundled_contract_loads():
    contracts = load_contracts(ROOT / "contracts")
    assert "bank_transactions" in contracts
    bank = contracts["bank_transactions"]
    assert [c.name for c in bank.columns] == ["txn_date", "domain", "location", "value", "transaction_count"]
    assert bank.aggregates[0].view == "bank_transactions_daily"


def test_a_minimal_contract_gets_safe_defaults(tmp_path):
    c = load_contract(write(tmp_path, MINIMAL))
    assert c.dataset == "trips" and c.version == 2 and c.schema == "analytics"
    assert c.column("fare").required and c.column("fare").source == "fare"
    assert c.drift.extra_columns == "discard" and c.dedup_columns == ("fare", "city")
    assert c.aggregates[0].table == "by_city_by_file"


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (('type = "decimal"', 'type = "money"'), 7, "'money' is not one of"),
        (('name = "city"', 'name = "City Name"'), 11, "not a valid name"),
        (("version = 2", 'version = "two"'), 3, "expected a int"),
        (('column = "fare"', 'column = "tip"'), 17, "'tip' is not a column"),
        (('group_by = ["city"]', 'group_by = ["nowhere"]'), 16, "'nowhere' is not a column"),
        (("scale = 2", "scale = 2\nformats = ['%Y']"), 9, "only date and timestamp columns take formats"),
        (('[[columns]]\nname = "city"', '[[columns]]\nname = "city"\nrequird = false'), 12, "unknown key 'requird'"),
        (("[dataset]", "[dataset"), 1, "not valid TOML"),
    ],
)
def test_a_broken_contract_fails_with_file_line_and_problem(tmp_path, change, line, message):
    path = write(tmp_path, MINIMAL.replace(*change))
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert err.value.line == line, str(err.value)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}:")


def test_two_contracts_for_one_dataset_are_refused(tmp_path):
    (tmp_path / "a.toml").write_text(MINIMAL)
    (tmp_path / "b.toml").write_text(MINIMAL)
    with pytest.raises(ContractError, match="also defined"):
        load_contracts(tmp_path)


def test_the_function_app_refuses_to_start_with_a_broken_contract(tmp_path):
    import subprocess
    import sys

    (tmp_path / "bad.toml").write_text(MINIMAL.replace('type = "decimal"', 'type = "money"'))
    proc = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=ROOT,
        env={"PIPELINE_CONTRACTS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "bad.toml:7: columns[0].type: 'money' is not one of" in proc.stderr


# --- contracts and data quality: rules that cannot work are refused at load ----------------------


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (('type = "string"', 'type = "string"\npattern = "(?=x)a"'), 13, "'(?=' is not supported"),
        (('type = "string"', 'type = "string"\npattern = "(a)\\\\1"'), 13, "'\\\\1' is not supported"),
        (('type = "string"', 'type = "string"\npattern = "[a"'), 13, "not a valid regular expression"),
        (('type = "string"', 'type = "string"\ncase = "upper"\nallowed = ["Goa", "PUNE"]'), 14, "'Goa' can never match"),
        (('type = "string"', 'type = "string"\ncase = "lower"\nmap = { "Goa" = "goa" }'), 14, "map key 'Goa' can never match"),
        (('type = "string"', 'type = "string"\ntimezone = "UTC"'), 13, "only timestamp columns take a time zone"),
        (('type = "string"', 'type = "timestamp"\nambiguous = "first"'), 13, "'first' is not one of reject, earliest, latest"),
        (('type = "string"', 'type = "timestamp"\ntimezone = "Mars/Olympus"'), 13, "unknown time zone"),
        (('type = "string"', 'type = "timestamp"\nmin = "yesterday"'), 13, "expected a date-time"),
        (('type = "string"', 'type = "boolean"\nmin = 1'), 13, "boolean columns take no min"),
        (("scale = 2", "scale = 2\nmin = 10\nmax = 1"), 9, "min is greater than max"),
        (('type = "string"', 'type = "string"\nallowed = "Goa"'), 13, "expected a list"),
    ],
)
def test_a_rule_that_cannot_work_fails_at_load_with_its_line(tmp_path, change, line, message):
    path = write(tmp_path, MINIMAL.replace(*change))
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert message in str(err.value)
    assert err.value.line == line, str(err.value)


def test_a_mapped_value_may_be_allowed_in_a_form_the_case_rule_cannot_produce(tmp_path):
    text = MINIMAL.replace('type = "string"', 'type = "string"\ncase = "title"\nmap = { Ewr = "EWR" }\nallowed = ["EWR", "Goa"]')
    assert load_contract(write(tmp_path, text)).column("city").allowed == ("EWR", "Goa")


def test_timestamp_bounds_and_the_ambiguous_rule_are_read(tmp_path):
    import datetime as dt

    rules = 'timezone = "Europe/Berlin"\nambiguous = "latest"\nmin = 2020-01-01T00:00:00\nmax = "2030-01-01T00:00:00+01:00"'
    text = MINIMAL.replace('type = "string"', f'type = "timestamp"\n{rules}')
    city = load_contract(write(tmp_path, text)).column("city")
    assert city.min == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    assert city.max == dt.datetime(2029, 12, 31, 23, tzinfo=dt.UTC)
    assert (city.timezone, city.ambiguous) == ("Europe/Berlin", "latest")


def test_a_contract_that_is_not_utf8_is_refused_with_the_file(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(MINIMAL.replace("trips", "tr\xefps").encode("latin-1"))
    with pytest.raises(ContractError, match="not UTF-8") as err:
        load_contract(path)
    assert str(err.value).startswith(str(path))


def test_the_bundled_contracts_are_in_the_format_reference_verbatim():
    doc = (ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")
    blocks = doc.split("```toml\n")[1:]
    embedded = [b.split("```", 1)[0] for b in blocks]
    for path in sorted((ROOT / "contracts").glob("*.toml")):
        assert path.read_text(encoding="utf-8") in embedded, f"docs/contracts.md does not show {path.name} as it is"


@pytest.mark.parametrize(
    ("dedup", "mode", "key", "columns"),
    [
        ("", "row", (), ("fare", "city")),
        ("[dedup]\nkey = []", "row", (), ("fare", "city")),
        ('[dedup]\nkey = ["city"]', "key", ("city",), ("city",)),
        ('[dedup]\nmode = "none"', "none", (), ("fare", "city")),
        ('[dedup]\nmode = "row"', "row", (), ("fare", "city")),
        ('[dedup]\nmode = "key"\nkey = ["city"]', "key", ("city",), ("city",)),
    ],
)
def test_dedup_is_a_contract_choice_and_older_contracts_keep_their_meaning(tmp_path, dedup, mode, key, columns):
    c = load_contract(write(tmp_path, MINIMAL.replace("[[columns]]", f"{dedup}\n\n[[columns]]", 1)))
    assert (c.dedup_mode, c.dedup_key, c.dedup_columns, c.deduplicates) == (mode, key, columns, mode != "none")


@pytest.mark.parametrize(
    ("dedup", "message"),
    [
        ('[dedup]\nmode = "key"', 'mode = "key" needs the key columns'),
        ('[dedup]\nmode = "none"\nkey = ["city"]', 'a key means nothing under mode = "none"'),
        ('[dedup]\nmode = "rows"', "'rows' is not one of none, row, key"),
        ('[dedup]\nmode = "key"\nkey = ["city", "city"]', "names a column twice"),
    ],
)
def test_a_dedup_section_that_cannot_mean_what_it_says_is_refused_at_its_line(tmp_path, dedup, message):
    path = write(tmp_path, MINIMAL.replace("[[columns]]", f"{dedup}\n\n[[columns]]", 1))
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert message in str(err.value) and err.value.line is not None
