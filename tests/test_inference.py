"""``infer`` must not draft a contract that loses data: leading zeros, identifier sums, rules
that would reject rows the sample itself holds.

Every test writes a real CSV file to ``tmp_path``, drafts a contract from it with the real
``infer``, and loads the draft the way the pipeline loads contracts.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from shared.core.contract import Contract, load_contract
from shared.tools.cli import main
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


# --- rules that would reject sampled values ------------------------------------------------------


def uncommented(text: str, rule: str) -> str:
    """The draft with its commented-out ``rule`` line put in force, as a person would."""
    return "\n".join(line[2:] if line.startswith(f"# {rule} = ") else line for line in text.splitlines()) + "\n"


def rejected(tmp_path: Path, path: Path, toml: str) -> int:
    contract_path = tmp_path / "in_force.toml"
    contract_path.write_text(toml, encoding="utf-8")
    result = transform_bytes(path.read_bytes(), tmp_path / "run", contract=load_contract(contract_path))
    assert result.rows_read == result.rows_valid + result.rows_rejected + result.rows_duplicate
    return result.rows_rejected


def test_infer_offers_a_pattern_that_would_reject_sampled_values_only_as_a_comment(tmp_path):
    odd = {i * 277 for i in range(18)}  # 18 real values of another shape, spread through the file
    rows = [[f"{'XY-9' if i in odd else 'AB'}{i:04d}", str(i % 7)] for i in range(5_000)]
    path = write_csv(tmp_path / "codes.csv", ["ref", "n"], rows)
    text, contract = drafted(path, tmp_path)
    assert contract.column("ref").pattern is None  # not a rule: it would refuse real rows
    line = next(x for x in text.splitlines() if x.startswith("# pattern = "))
    assert line.startswith('# pattern = "[A-Z]{2}\\\\d{4}"   # would reject 18 of 5,000 sampled values, e.g. ')
    assert "'XY-90000'" in line
    assert rejected(tmp_path, path, text) == 0
    assert rejected(tmp_path, path, uncommented(text, "pattern")) == 18  # the count the comment gave


def test_infer_applies_a_pattern_that_every_sampled_value_fits(tmp_path):
    rows = [[f"T{i:09d}"] for i in range(500)]
    path = write_csv(tmp_path / "ids.csv", ["trip"], rows)
    text, contract = drafted(path, tmp_path)
    assert contract.column("trip").pattern == "[A-Z]\\d{9}"
    assert "# guess: the shape of every sampled value" in column_block(text, "trip")
    assert "would reject" not in text


def test_infer_offers_the_commonest_values_as_an_allowed_list_only_as_a_comment_when_others_occur(tmp_path):
    rare = [f"typo{i}" for i in range(30)]  # 30 values seen once each, among 1,000
    rows = [[rare[i // 33] if i % 33 == 0 and i // 33 < 30 else ["red", "green", "blue"][i % 3]] for i in range(1_000)]
    path = write_csv(tmp_path / "colours.csv", ["colour"], rows)
    text, contract = drafted(path, tmp_path)
    assert contract.column("colour").allowed == ()
    assert "# guess: the 3 commonest of the 33 values seen, 97.0% of the sampled values" in column_block(text, "colour")
    assert '# allowed = ["blue", "green", "red"]   # would reject 30 of 1,000 sampled values, e.g. ' in text
    assert rejected(tmp_path, path, text) == 0
    assert rejected(tmp_path, path, uncommented(text, "allowed")) == 30


def test_infer_applies_an_allowed_list_when_the_sample_holds_only_those_values(tmp_path):
    rows = [[["Goa", "GOA", "Pune"][i % 3]] for i in range(90)]
    path = write_csv(tmp_path / "cities.csv", ["city"], rows)
    text, contract = drafted(path, tmp_path)
    assert (contract.column("city").case, contract.column("city").allowed) == ("upper", ("GOA", "PUNE"))
    assert "would reject" not in text
    assert rejected(tmp_path, path, text) == 0


# --- what the example aggregate sums --------------------------------------------------------------


def aggregate_lines(text: str) -> dict[str, str]:
    """The commented-out example aggregate's lines by key, and the 'Not summed' note."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# Not summed"):
            out["not_summed"] = line
        for key in ("group_by", "metrics"):
            if line.startswith(f"# {key} = "):
                out[key] = line.removeprefix(f"# {key} = ")
    return out


def test_infer_never_sums_identifier_like_columns_in_the_example_aggregate(tmp_path):
    rng = random.Random(3)
    header = ["day_seen", "region", "CustomerID", "fips", "Account No", "Invoice #", "row", "Year", "quantity", "amount"]
    rows = [
        [
            f"2024-03-{i % 28 + 1:02d}", ["north", "south"][i % 2], str(rng.randint(1, 40)),
            str(rng.choice([36061, 6037, 17031])), str(rng.randint(10, 30)), str(rng.randint(500, 520)), str(i + 1),
            str(rng.choice([2023, 2024])),
            str(rng.randint(1, 9)), f"{rng.randint(100, 9_999) / 100:.2f}",
        ]
        for i in range(300)
    ]  # fmt: skip
    path = write_csv(tmp_path / "orders.csv", header, rows)
    text, contract = drafted(path, tmp_path)
    assert {c.name for c in contract.columns if c.type == "integer"} == {
        "customerid", "fips", "account_no", "invoice", "row", "year", "quantity",
    }  # fmt: skip
    lines = aggregate_lines(text)
    assert lines["metrics"] == '[{ name = "rows", op = "count" }, { name = "quantity_total", op = "sum", column = "quantity" }]'
    assert lines["not_summed"] == (
        "# Not summed, identifiers or labels rather than quantities: customerid (the name ends in 'id'); "
        "fips (the name ends in 'fips'); account_no (the name ends in 'no'); invoice (the name ends in '#'); "
        "row (each of its 300 sampled values is a different whole number); "
        "year (the name ends in 'year', a label rather than a quantity)."
    )
    # the example, uncommented, is a contract the pipeline loads
    aggregate = [x[2:] for x in text.splitlines() if x.startswith(("# [[aggregates]]", "# name = ", "# group_by", "# metrics"))]
    in_force = tmp_path / "with_aggregate.toml"
    in_force.write_text(text + "\n".join(aggregate) + "\n", encoding="utf-8")
    [agg] = load_contract(in_force).aggregates
    assert [m.column for m in agg.metrics] == [None, "quantity"]


@pytest.mark.parametrize(
    "header",
    ["CustomerID", "customerId", "customer_id", "Customer ID", "customer-id", "ZIPCode", "zipcode", "Postcode", "FIPS",
     "Account No", "AcctNbr", "barcode", "phoneNumber", "API_KEY", "zip5", "Order #"],
)  # fmt: skip
def test_infer_recognises_identifier_names_whatever_their_spelling(tmp_path, header):
    rows = [[f"2024-01-{i % 28 + 1:02d}", str(i % 50 + 1)] for i in range(200)]  # repeats: only the name can tell
    path = write_csv(tmp_path / "f.csv", ["when", header], rows)
    text, _ = drafted(path, tmp_path)
    lines = aggregate_lines(text)
    assert lines["metrics"] == '[{ name = "rows", op = "count" }]'
    assert "the name ends in" in lines["not_summed"] and "so only rows are counted" in lines["not_summed"]


@pytest.mark.parametrize("header", ["paid", "amount_valid", "Passenger Count", "kidney_stones", "no_shows", "hours", "Value"])
def test_infer_sums_a_quantity_whose_name_only_looks_like_an_identifier(tmp_path, header):
    rows = [[f"2024-01-{i % 28 + 1:02d}", str(i % 50 + 1)] for i in range(200)]
    path = write_csv(tmp_path / "f.csv", ["when", header], rows)
    text, contract = drafted(path, tmp_path)
    name = contract.columns[1].name
    assert aggregate_lines(text)["metrics"].endswith(f'{{ name = "{name}_total", op = "sum", column = "{name}" }}]')
    assert "Not summed" not in text


@pytest.mark.parametrize(
    ("values", "summed"),
    [
        ([str(i * 7 + 3) for i in range(150)], False),  # whole numbers, never repeated: numbering rows
        ([f"{i * 7 + 3}.0" for i in range(150)], False),  # the same, exported through a float
        ([str(2**53 + i) for i in range(150)], False),  # past 2**53, where a float would see repeats
        ([f"{i * 7 + 3}.25" for i in range(150)], True),  # distinct amounts with cents are a measure
        ([str(i * 7 + 3) for i in range(60)], True),  # too few rows to say a distinct run is a numbering
        ([str(i % 40) for i in range(150)], True),  # repeats: a quantity
    ],
)
def test_infer_treats_whole_numbers_unique_in_enough_rows_as_identifiers(tmp_path, values, summed):
    rows = [[f"2024-01-{i % 28 + 1:02d}", v] for i, v in enumerate(values)]
    path = write_csv(tmp_path / "f.csv", ["when", "figure"], rows)
    text, _ = drafted(path, tmp_path)
    assert ('column = "figure"' in aggregate_lines(text)["metrics"]) == summed
    assert ("figure (each of its" in text) == (not summed)


# --- the command, end to end ----------------------------------------------------------------------


@pytest.fixture
def cli(capsys):
    """Run the CLI; the environment it fills in from local.settings.json is put back after."""
    saved = dict(os.environ)

    def run(*argv: object) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    yield run
    os.environ.clear()
    os.environ.update(saved)


def test_infer_command_drafts_a_contract_that_keeps_every_row_and_every_zero_of_its_sample(cli, tmp_path):
    rng = random.Random(11)
    odd = set(rng.sample(range(2_000), 18))
    rows = [
        [f"2024-05-{i % 31 + 1:02d}", f"{rng.randint(1, 99_999):05d}", f"{'Q' if i in odd else 'P'}-{rng.randint(0, 9_999):04d}"
         + ("x" if i in odd else ""), str(rng.choice([36061, 6037, 17031])), str(rng.randint(1, 12))]
        for i in range(2_000)
    ]  # fmt: skip
    path = write_csv(tmp_path / "shipments.csv", ["Shipped On", "Zip", "Ref", "FIPS", "Units"], rows)
    target = tmp_path / "contracts" / "shipments.toml"
    code, out, _ = cli("infer", path, "--out", target)
    assert code == 0 and "wrote" in out
    text, contract = target.read_text(), load_contract(target)
    assert contract.column("zip").type == "string" and "have a leading zero" in column_block(text, "zip")
    assert contract.column("ref").pattern is None and "would reject 18 of 2,000 sampled values" in text
    assert aggregate_lines(text)["metrics"].endswith('{ name = "units_total", op = "sum", column = "units" }]')
    assert "fips (the name ends in 'fips')" in aggregate_lines(text)["not_summed"]
    code, out, _ = cli("check", path, "--contract", target, "--fail-on-rejects")
    assert code == 0, out
    assert "rows read 2,000 = valid 2,000 + rejected 0" in out


# --- de-duplication ---------------------------------------------------------------------------------


def test_infer_keeps_every_row_when_repeated_lines_have_nothing_that_identifies_a_record(tmp_path):
    rows = [["Laptop", "Leeds", "1250"]] * 30 + [["Desk", "York", "310"]] * 12 + [["Chair", "York", "75"]]
    text, contract = drafted(write_csv(tmp_path / "transfers.csv", ["item", "site", "value"], rows), tmp_path)
    assert contract.dedup_mode == "none"
    assert "40 of 43 sampled lines repeat an earlier line exactly" in text and "no column identifies a record" in text
    data = ("item,site,value\n" + "\n".join(",".join(r) for r in rows) + "\n").encode()
    result = transform_bytes(data, tmp_path, contract)
    assert (result.rows_valid, result.rows_duplicate) == (43, 0)


def test_infer_drops_exact_repeats_of_rows_an_identifier_tells_apart(tmp_path):
    rows = [[f"T{i:05d}", "Leeds", str(i % 90 + 10)] for i in range(200)]
    rows += rows[:5]  # five records sent twice
    text, contract = drafted(write_csv(tmp_path / "orders.csv", ["order_ref", "site", "amount"], rows), tmp_path)
    assert contract.dedup_mode == "row"
    assert "5 of 205 sampled lines repeat an earlier line exactly" in text and "order_ref identifies a record" in text


def test_infer_proposes_no_deduplication_for_a_sample_without_repeats(tmp_path):
    rows = [[f"2024-01-{1 + i % 28:02d}", f"site{i}", str(i)] for i in range(100)]
    text, contract = drafted(write_csv(tmp_path / "readings.csv", ["day", "site", "reading"], rows), tmp_path)
    assert contract.dedup_mode == "none" and "no sampled line repeats another exactly" in text
