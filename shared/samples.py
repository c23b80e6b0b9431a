"""Deterministic sample files shaped like the datasets the bundled contracts describe.

The seed's own file (Kaggle's "massive bank dataset") cannot be downloaded here, so the demo,
the tests and the benchmarks generate data of its shape: one year of dates as m/d/yyyy, a
handful of upper-case domains, about thirty Indian cities, integer values and counts. A little
dirt goes in on purpose (blank and non-numeric values, impossible dates, negative amounts,
stray whitespace and lower case that cleaning fixes) and exact duplicate rows, some of which
only become duplicates after cleaning. The same seed always gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

DOMAINS = ["RESTRAUNT", "INVESTMENTS", "RETAIL", "MEDICAL", "PUBLIC", "INTERNATIONAL", "EDUCATION"]
CITIES = [
    "Goa", "Mathura", "Bhuj", "Kolkata", "Delhi", "Mumbai", "Pune", "Surat", "Agra", "Ajmer",
    "Amritsar", "Bokaro", "Buxar", "Dhanbad", "Durg", "Hisar", "Indore", "Jaipur", "Kanpur", "Kochi",
    "Lucknow", "Ludhiana", "Madurai", "Nagpur", "Patna", "Raipur", "Ranchi", "Shimla", "Udaipur", "Varanasi",
]  # fmt: skip
BATCH_ROWS = 1_000_000


def _bank_batch(rng: np.random.Generator, n: int, dirty: float, duplicates: float) -> pl.DataFrame:
    start = dt.date(2022, 1, 1)
    days = [start + dt.timedelta(days=i) for i in range(365)]
    us_dates = np.array([f"{d.month}/{d.day}/{d.year}" for d in days])
    iso_dates = np.array([d.isoformat() for d in days])
    day = rng.integers(0, 365, n)
    iso = rng.random(n) < 0.02  # a few rows use the other accepted date format
    df = pl.DataFrame(
        {
            "Date": np.where(iso, iso_dates[day], us_dates[day]),
            "Domain": np.array(DOMAINS)[rng.integers(0, len(DOMAINS), n)],
            "Location": np.array(CITIES)[rng.integers(0, len(CITIES), n)],
            "Value": rng.integers(1_000, 1_000_000, n).astype(str),
            "Transaction_count": rng.integers(1, 5_000, n).astype(str),
        }
    )
    # dirt: each dirty row gets exactly one problem; a third of the "problems" are only cosmetic
    kinds = np.where(rng.random(n) < dirty, rng.integers(0, 9, n), -1)
    pad = pl.lit("  ")
    df = df.with_columns(pl.Series("__kind", kinds)).with_columns(
        pl.when(pl.col("__kind") == 0).then(pl.lit("")).when(pl.col("__kind") == 1).then(pl.lit("n/a"))
        .when(pl.col("__kind") == 2).then(pl.concat_str(pl.lit("-"), pl.col("Value")))
        .when(pl.col("__kind") == 6).then(pl.concat_str(pad, pl.col("Value"), pad)).otherwise(pl.col("Value")).alias("Value"),
        pl.when(pl.col("__kind") == 3).then(pl.lit("13/45/2022")).when(pl.col("__kind") == 4).then(pl.lit("2/30/2022"))
        .otherwise(pl.col("Date")).alias("Date"),
        pl.when(pl.col("__kind") == 5).then(pl.lit("0")).otherwise(pl.col("Transaction_count")).alias("Transaction_count"),
        pl.when(pl.col("__kind") == 7).then(pl.col("Domain").str.to_lowercase()).otherwise(pl.col("Domain")).alias("Domain"),
        pl.when(pl.col("__kind") == 8).then(pl.concat_str(pl.lit(" "), pl.col("Location"), pl.lit(" ")))
        .otherwise(pl.col("Location")).alias("Location"),
    ).drop("__kind")  # fmt: skip
    # duplicates: copies of earlier rows of the batch, placed at random later positions
    k = int(n * duplicates)
    if k:
        src = rng.integers(0, n, k)
        df = pl.concat([df, df[src.tolist()]])
        order = rng.permutation(df.height)
        df = df[order.tolist()]
    return df


def bank_transactions(path: Path | str, rows: int, *, seed: int = 7, dirty: float = 0.005, duplicates: float = 0.01) -> Path:
    """Write ``rows`` data rows (duplicates included) of bank-shaped CSV to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = 0
    with open(path, "wb") as fh:
        while written < rows:
            target = min(BATCH_ROWS, rows - written)
            base = max(1, round(target / (1 + duplicates)))
            batch = _bank_batch(rng, base, dirty, duplicates).head(target)
            if batch.height < target:  # rounding: top up with fresh rows
                batch = pl.concat([batch, _bank_batch(rng, target - batch.height, dirty, 0.0)])
            batch.write_csv(fh, include_header=written == 0, quote_style="necessary")
            written += batch.height
    return path


GENERATORS = {"bank_transactions": bank_transactions}
