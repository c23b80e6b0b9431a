"""Smoke tests of the benchmark harness (bench/): every contender does the same job as the pipeline.

They run the harness's own code path (generated data, one child process per contender, the
aggregates' equality check) on small files, in seconds. Timings are never asserted: the
harness prints and writes them, and they mean nothing on a shared CI machine.
"""

from __future__ import annotations

import polars as pl
import pytest

from bench import common, compare, contenders, transform

SMOKE_ROWS = 20_000
OTHERS = ["polars_obvious", "polars_categorical", "duckdb", "duckdb_256mb", "pandas"]

# Rows where engines could disagree with the contract's rules (contracts/bank_transactions.toml).
EDGE_CSV = """Date,Domain,Location,Value,Transaction_count
1/5/2022,RETAIL,Goa,100,1
01/05/2022,retail, Goa ,100,1
1/5/2022,RETAIL,Goa,+100,01
1/5/22,RETAIL,Goa,100,1
0999-01-05,RETAIL,Goa,100,1
1/5/0999,RETAIL,Goa,100,1
2022-1-5,RETAIL,Goa,7,2
2022-01-05,\tMedical\t,Pune,7,2
2/29/2023,RETAIL,Goa,1,1
2/29/2024,RETAIL,Goa,1,1
13/45/2022,RETAIL,Goa,1,1
1/6/2022,RETAIL,Goa,1e3,1
1/6/2022,RETAIL,Goa,5.0,1
1/6/2022,RETAIL,Goa,1_000,1
1/6/2022,RETAIL,Goa,0x10,1
1/6/2022,RETAIL,Goa,n/a,1
1/6/2022,RETAIL,Goa,,1
1/6/2022,RETAIL,Goa,-0,1
1/6/2022,RETAIL,Goa,-5,1
1/6/2022,RETAIL,Goa,5,0
1/6/2022,RETAIL,Goa,5,-1
1/6/2022,RETAIL,,5,1
1/6/2022,RETAIL," ",5,1
1/6/2022,,Goa,5,1
,RETAIL,Goa,5,1
1/6/2022,RETAIL,"Goa",9223372036854775807,1
1/6/2022,RETAIL,"Goa",9223372036854775808,1
1/7/2022,NA,NA,5,1
1/7/2022,null,None,5,1
1/7/2022,RETAIL,Kochi,  42  ,  3
1/7/2022,RETAIL,Kochi,42,3
"""


def _skip_unless_available(name: str) -> None:
    why = contenders.available(name)
    if why:
        pytest.skip(f"{name}: {why}")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A generated seed-shaped file and the pipeline's aggregates of it, through the harness."""
    base = tmp_path_factory.mktemp("bench")
    path = common.dataset(SMOKE_ROWS, seed=3, directory=base / "data")
    record = transform.run_once("pipeline", path, base / "work" / "pipeline")
    assert "error" not in record, record.get("error")
    assert record["info"]["counts"]["rows_read"] == SMOKE_ROWS
    assert record["peak_rss_mib"] > 0
    reference = compare.read(contenders.aggregates_path("pipeline", base / "work" / "pipeline"))
    return base, path, reference


@pytest.mark.parametrize("name", OTHERS)
def test_each_contender_computes_the_pipelines_aggregates(smoke, name):
    base, path, reference = smoke
    _skip_unless_available(name)
    outdir = base / "work" / name
    record = transform.run_once(name, path, outdir)
    assert "error" not in record, record.get("error")
    compare.check(reference, compare.read(contenders.aggregates_path(name, outdir)), "pipeline", name)


def test_the_generated_file_has_dirt_and_duplicates(smoke):
    _, _, reference = smoke
    assert reference.height > 1_000
    assert reference["record_count"].sum() < SMOKE_ROWS  # rejects and duplicates were dropped


@pytest.mark.parametrize("name", OTHERS)
def test_contenders_follow_the_contracts_rules_on_edge_cases(tmp_path, name):
    _skip_unless_available(name)
    path = tmp_path / "edge.csv"
    path.write_text(EDGE_CSV)
    outs = {}
    for who in ("pipeline", name):
        outdir = tmp_path / who
        contenders.prepare(who, path, outdir)
        contenders.RUN[who](path, outdir)
        outs[who] = compare.read(contenders.aggregates_path(who, outdir))
    expected = outs["pipeline"]
    # the contract's reading: 2-digit and pre-1000 years, 1e3, 5.0, 0x10, overflow and blanks are rejected
    assert expected["record_count"].sum() == 9
    compare.check(expected, outs[name], "pipeline", name)


def test_the_check_reports_a_difference_with_a_sample(smoke):
    _, _, reference = smoke
    changed = reference.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.col("total_value") + 1).otherwise(pl.col("total_value")).alias("total_value")
    ).slice(1)
    diff = compare.difference(reference, changed, "pipeline", "other")
    assert diff is not None
    assert "2 groups differ (1 only in pipeline, 0 only in other)" in diff
    with pytest.raises(compare.Mismatch):
        compare.check(reference, changed, "pipeline", "other")
    assert (
        compare.difference(reference, reference.sample(fraction=1.0, shuffle=True, seed=1).sort(compare.KEYS), "a", "b") is None
    )


def test_sizes_are_read_as_people_write_them():
    assert common.parse_rows("1000000, 10M,50m,20k,1e6") == [1_000_000, 10_000_000, 50_000_000, 20_000, 1_000_000]


def test_the_function_app_and_every_shared_module_import_none_of_the_benchmark_packages():
    """bench/requirements.txt is installed beside the app's packages in .venv, so a stray import
    of pandas or pyarrow in shared/ would pass here and fail in Azure: prove it never happens."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    modules = sorted(f"shared.{p.stem}" for p in (root / "shared").glob("*.py") if p.stem != "__main__")
    code = (
        "import importlib, sys\n"
        "import function_app\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(' '.join(sorted(m for m in ('duckdb', 'pandas', 'pyarrow', 'matplotlib') if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
