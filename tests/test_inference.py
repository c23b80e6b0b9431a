"""``infer`` must not draft a contract that loses data: leading zeros, identifier sums, rules
that would reject rows the sample itself holds.

Every test writes a real CSV file to ``tmp_path``, drafts a contract from it with the real
``infer``, and loads the draft the way the pipeline loads contracts.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from shared.core.contract import Contract, load_contract
from shared.tools.inference import infer
from tests.helpers import clean_rows, transform_bytes


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def drafted(path: Path, tmp_path: Path) -> tuple[str, Contract]:
    """The draft's text, and the draft loaded as a contract (which it always must)."""
    text = infer(path).toml()
    target = tmp_path / f"{path.stem}.toml"
    target.write_text(text, encoding="utf-8")
    return text, load_contract(target)


def column_block(toml: str, name: str) -> str:
    """The lines of one [[columns]] table of a draft, its comments included."""
    return next(b for b in toml.split("\n\n") if f'name = "{name}"' in b and "[[columns]]" in b)


# --- leading zeros -------------------------------------------------------------------------------


def test_infer_keeps_leading_zero_codes_as_strings(tmp_path):
    rng = random.Random(7)
    zips = ["02134", "10001", "60601", "94105", "01002", "30301"]
    rows = [
        [rng.choice(zips), f"{rng.randint(1, 56):02d}{rng.randint(1, 999):03d}", f"{rng.randint(1, 10**6):08d}", str(i % 9)]
        for i in range(400)
    ]
    path = write_csv(tmp_path / "places.csv", ["zip", "fips", "account", "quantity"], rows)
    text, contract = drafted(path, tmp_path)
    assert {c.name: c.type for c in contract.columns} == {
        "zip": "string", "fips": "string", "account": "string", "quantity": "integer",
    }  # fmt: skip
    padded = sum(r[0].startswith("0") for r in rows)
    assert f"guess: string, not integer: {padded:,} of 400 sampled values have a leading zero" in column_block(text, "zip")
    assert "as integers they would lose it" in column_block(text, "zip")
    # and the draft, run on its own file, keeps every zero
    result = transform_bytes(path.read_bytes(), tmp_path / "run", contract=contract)
    assert clean_rows(result)["zip"].to_list() == [r[0] for r in rows]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["0", "12", "-3", "+7", "0", "100"], "integer"),  # "0" alone is no leading zero
        (["0.5", "-0.25", "0", "10.75", "-0.5"], "decimal"),  # nor is the zero before a point
        (["0.0", "-0", "0", "3.5"], "decimal"),
        (["02134", "10001", "60601"], "string"),
        (["-07", "12", "3"], "string"),  # a padded negative loses its zero as well
        (["00.5", "1.5", "2.25"], "string"),  # and so does a padded integer part
        (["007", "1e3", "2.5e-1"], "string"),  # whatever number type it would have been
    ],
)
def test_infer_types_numbers_as_strings_only_when_a_leading_zero_would_be_lost(tmp_path, values, expected):
    path = write_csv(tmp_path / "n.csv", ["n"], [[values[i % len(values)]] for i in range(60)])
    text, contract = drafted(path, tmp_path)
    assert contract.column("n").type == expected
    assert ("leading zero" in text) == (expected == "string")
