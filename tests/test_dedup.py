"""The two-pass transform gives the same rows whatever its memory knobs, and keeps the first copy.

The transform spills valid rows by hash bucket (in memory, then on disk), de-duplicates one
range of buckets at a time, reads repetitive columns through dictionaries (capped), and adds
up aggregates in dense arrays where it can. None of that may change a single output: these
tests turn every knob to its extreme and compare with the defaults and with the oracle.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from shared.core import dedup, source, transform
from shared.tools import samples
from tests import oracle
from tests.helpers import BANK, transform_bytes

HEADER = b"Date,Domain,Location,Value,Transaction_count\n"


def run(data: bytes, tmp_path: Path, *, chunk_bytes: int = 32 << 20, **knobs: int) -> transform.Result:
    src = source.open_source([data[i : i + 65_536] for i in range(0, len(data), 65_536)], chunk_bytes=chunk_bytes)
    return transform.run(BANK, src, tmp_path, transform.Lineage("bank_transactions/x.csv", "run-1"), **knobs)


def outputs(result: transform.Result) -> tuple:
    clean = pl.read_parquet(result.outputs.clean_parts).sort("_line")
    rejects = pl.read_parquet(result.outputs.rejects).sort("line")
    daily = pl.read_parquet(result.outputs.aggregates["daily"])
    counts = (result.rows_read, result.rows_valid, result.rows_rejected, result.rows_duplicate)
    return counts, clean.rows(), rejects.rows(), daily.rows(), result.columns


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return samples.bank_transactions(tmp_path_factory.mktemp("s") / "s.csv", 40_000, seed=3, dirty=0.03, duplicates=0.05)


@pytest.mark.parametrize(
    "knobs",
    [
        {"chunk_bytes": 50_000},  # many segments: copies of a row in different segments
        {"range_rows": 1_000},  # many ranges, many clean parts
        {"spill_memory": 0, "range_rows": 5_000, "chunk_bytes": 100_000},  # everything through disk
        {"spill_memory": 300_000, "chunk_bytes": 100_000},  # memory first, then disk
        {"dictionary_cap": 0},  # no dictionary after the first segment
        {"dictionary_cap": 50, "chunk_bytes": 60_000},  # dictionaries outgrow their cap mid-file
    ],
    ids=["segments", "ranges", "all-disk", "memory-then-disk", "no-dictionary", "cap-mid-file"],
)
def test_every_knob_gives_the_same_outputs_as_the_defaults_and_the_oracle(sample, tmp_path, knobs):
    expected = oracle.bank(sample)
    base = outputs(run(sample.read_bytes(), tmp_path / "base"))
    result = run(sample.read_bytes(), tmp_path / "knobs", **knobs)
    assert outputs(result) == base
    assert base[0] == (expected.read, expected.valid, expected.rejected, expected.duplicate)
    got = {(r[0], r[1], r[2], Decimal(r[3]), Decimal(r[4]), r[5]) for r in base[3]}
    assert got == expected.view_rows()
    if knobs.get("spill_memory") == 0:
        assert result.notes["spilled_to_disk_bytes"] > 0
    if "range_rows" in knobs:
        assert len(result.outputs.clean_parts) > 5


def test_the_first_copy_is_kept_across_segments_and_ranges(tmp_path):
    rows = [b"%d/1/2022,RETAIL,Goa,%d,1\n" % (1 + i % 12, i) for i in range(3_000)]
    data = HEADER + b"".join(rows) + b"".join(reversed(rows))  # every row again, later, in reverse order
    result = run(data, tmp_path, chunk_bytes=10_000, range_rows=100)
    clean = pl.read_parquet(result.outputs.clean_parts)
    assert (result.rows_valid, result.rows_duplicate) == (3_000, 3_000)
    assert sorted(clean["_line"].to_list()) == list(range(2, 3_002))


def test_first_occurrence_compares_values_not_hashes():
    # every row has the same hash: only the values can tell copies from collisions
    rows = pl.DataFrame({"k": ["a", "b", "a", "c", "b", "a"], "n": [1, 1, 1, 1, 2, 1]}).with_columns(
        pl.lit(7, pl.UInt64).alias(dedup.HASH)
    )
    first = dedup.first_occurrence(rows, [pl.col("k"), pl.col("n")])
    assert first.to_list() == [True, True, False, True, True, False]


def test_first_occurrence_without_repeated_hashes_keeps_every_row():
    rows = pl.DataFrame({"k": [1, 1, 2]}).with_columns(pl.Series(dedup.HASH, [1, 2, 3], pl.UInt64))
    assert dedup.first_occurrence(rows, [pl.col("k")]).to_list() == [True, True, True]  # trusts distinct hashes


def test_a_spilled_range_comes_back_whole_and_in_order(tmp_path):
    spill = dedup.Spill(tmp_path, memory_bytes=6_000, disk_rows=900)  # one piece in memory, then files
    frames = []
    for piece in range(6):
        frame = pl.DataFrame({"line": range(piece * 500, piece * 500 + 500)}).with_columns(
            (pl.col("line") * 7919 % dedup.BUCKETS).cast(pl.UInt16).alias(dedup.BUCKET)
        )
        frames.append(frame)
        spill.add(frame, tag="t")
    ranges = spill.ranges(budget=400)
    assert spill.in_memory > 0 and spill.on_disk > 0
    assert all(hi > lo for lo, hi in ranges) and ranges[0][0] == 0 and ranges[-1][1] == dedup.BUCKETS
    seen = []
    for i, (lo, hi) in enumerate(ranges):
        lines = pl.concat([f for f, _ in spill.read(i)])["line"].to_list()
        buckets = [n * 7919 % dedup.BUCKETS for n in lines]
        assert all(lo <= b < hi for b in buckets)
        for b in set(buckets):  # within a bucket (where copies of a row meet), line order
            of_b = [n for n, nb in zip(lines, buckets, strict=True) if nb == b]
            assert of_b == sorted(of_b)
        seen += lines
    assert sorted(seen) == list(range(3_000))


def test_sums_too_large_for_the_dense_path_fall_back_exactly(tmp_path):
    big = 2**62
    rows = b"".join(b"1/1/2022,RETAIL,Goa,%d,1\n" % (big + i) for i in range(50))  # sums overflow 64 bits
    result = transform_bytes(HEADER + rows, tmp_path)
    total = pl.read_parquet(result.outputs.aggregates["daily"])["total_value"].item()
    assert Decimal(total) == sum(Decimal(big + i) for i in range(50))
