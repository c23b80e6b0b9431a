"""Contracts are validated when loaded: a broken one names the file, the line and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.contract import ContractError, load_contract, load_contracts

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
