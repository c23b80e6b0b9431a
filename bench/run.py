"""The benchmark harness, one command: ``scripts/bench`` (or ``.venv/bin/python -m bench.run``).

    scripts/bench                                   # everything: transform at 1M and 10M, load, e2e, cold start
    scripts/bench --rows 50000000 --only transform  # the 50M run (about 1.9 GB of CSV, generated once)
    scripts/bench --only load,coldstart --repeat 5

Results: JSON, markdown and a PNG chart in ``--out`` (``bench/results``), and the results
section of ``docs/benchmarks.md`` when ``--out`` is the default. Timings are printed and
written, never asserted; the run fails only when contenders disagree on the aggregates (or a
benchmark cannot run at all).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import common

BENCHMARKS = ("transform", "lake", "load", "e2e", "coldstart")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", default="1000000,10000000", help="sizes of the transform benchmark (1M,10M,50M accepted)")
    p.add_argument("--repeat", type=int, default=3, help="runs per contender and size; the median is reported")
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    p.add_argument("--contenders", help="comma-separated subset of the transform contenders (default: all installed)")
    p.add_argument("--out", default=str(common.RESULTS_DIR), help="where results go (default bench/results)")
    p.add_argument("--seed", type=int, default=common.DEFAULT_SEED, help="seed of the generated data")
    p.add_argument("--lake-rows", default="1000000,10000000", help="sizes of the lake benchmark (Delta against Parquet)")
    p.add_argument("--load-rows", type=int, default=1_000_000, help="rows of the loading benchmark's aggregate file")
    p.add_argument("--e2e-rows", type=int, default=1_000_000, help="rows of the end-to-end benchmark's file")
    p.add_argument(
        "--settle",
        type=float,
        default=60,
        help="before each measured run, wait up to this many seconds for other work to use < 15%% of the CPU (0: no wait)",
    )
    p.add_argument("--coldstart-repeat", type=int, default=10, help="fresh processes for the cold-start median")
    return p


def _missing_packages() -> list[str]:
    import importlib.util

    return [m for m in ("duckdb", "pandas", "pyarrow", "matplotlib") if importlib.util.find_spec(m) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    missing = _missing_packages()
    if missing:
        common.log(
            f"note: {', '.join(missing)} not installed; those contenders (and the chart) are skipped. "
            "Install them with: .venv/bin/pip install -r bench/requirements.txt (scripts/bench does)"
        )
    from bench import measure, report

    common.log(f"peak RSS from: {measure.METHOD}; {common.machine()['cores']} cores; results in {out}")
    if "transform" in only:
        from bench import compare, transform

        names, skipped = transform.select(args.contenders.split(",") if args.contenders else None)
        for name, why in skipped.items():
            common.log(f"skipping {name}: {why}")
        for rows in common.parse_rows(args.rows):
            try:
                doc = transform.bench_size(rows, names, args.repeat, seed=args.seed, mismatch_dir=out, settle=args.settle)
            except compare.Mismatch as exc:
                print(f"\nFAILED: the contenders disagree, so the timings compare different jobs.\n{exc}", file=sys.stderr)
                return 1
            doc["skipped"] = skipped
            common.write_json(out / f"transform-{rows}.json", doc)
            report.write(out, update_docs=out == common.RESULTS_DIR.resolve())
    if "lake" in only:
        from bench import lake

        common.log("lake benchmark: the Delta tables against plain Parquet, per ingest")
        doc = lake.bench(common.parse_rows(args.lake_rows), args.repeat, seed=args.seed, settle=args.settle)
        common.write_json(out / "lake.json", doc)
        print(lake.table(doc))
    if "load" in only:
        from bench import load

        common.log(f"loading benchmark: {args.load_rows:,} aggregate rows")
        common.write_json(out / "load.json", load.bench(args.load_rows, args.repeat, settle=args.settle))
    if "e2e" in only:
        from bench import e2e

        common.log(f"end-to-end benchmark: {args.e2e_rows:,}-row file")
        common.write_json(out / "e2e.json", e2e.bench(args.e2e_rows, args.repeat, seed=args.seed, settle=args.settle))
    if "coldstart" in only:
        from bench import coldstart

        common.write_json(out / "coldstart.json", coldstart.bench(args.coldstart_repeat))
    page = report.write(out, update_docs=out == common.RESULTS_DIR.resolve())
    print(report.targets_table(report.targets(out)))
    print(f"report: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
