"""Deterministic sample files shaped like the datasets the bundled contracts describe.

The seed's own file (Kaggle's "massive bank dataset") cannot be downloaded here, so the demo,
the tests and the benchmarks generate data of its shape: one year of dates as m/d/yyyy, a
handful of upper-case domains, about thirty Indian cities, integer values and counts. A little
dirt goes in on purpose (blank and non-numeric values, impossible dates, negative amounts,
stray whitespace and lower case that cleaning fixes) and exact duplicate rows, some of which
only become duplicates after cleaning. The same seed always gives the same bytes.

``taxi_trips`` writes the second bundled dataset, of another shape: trips with local
timestamps, money as decimals, optional fields and a monthly and an hourly aggregate.
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


# --- taxi trips: the second bundled contract, of a different shape ------------------------------

BOROUGHS = ["Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island", "EWR"]
BOROUGH_WEIGHTS = [0.62, 0.16, 0.14, 0.05, 0.02, 0.01]
VENDORS = ["CMT", "VTS", "DDS"]
VENDOR_SPELLINGS = ["1", "2", "Creative Mobile", "VeriFone", "cmt", "vts"]  # all mapped by the contract
PAYMENTS = ["card", "cash", "no charge", "dispute"]
TAXI_YEAR_START = dt.datetime(2024, 1, 1)
TAXI_SECONDS = 366 * 24 * 3600  # 2024, a leap year, in New York local time
TAXI_COLUMNS = [  # the file's own order, which is not the contract's: matched by name
    "Trip ID", "Vendor", "Pickup Datetime", "Dropoff Datetime", "Pickup Borough", "Passenger Count",
    "Trip Distance", "Payment Type", "Fare Amount", "Tip Amount", "Total Amount", "Store and Fwd",
    "Congestion Surcharge",
]  # fmt: skip
TAXI_DIRT = 12  # kinds of dirt, see _taxi_dirt


def _money(cents: pl.Expr) -> pl.Expr:
    """Cents as plain decimal text with two places: 1234 -> "12.34", -5 -> "-0.05"."""
    sign = pl.when(cents < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    whole, part = cents.abs() // 100, (cents.abs() % 100).cast(pl.String).str.zfill(2)
    return pl.concat_str(sign, whole.cast(pl.String), pl.lit("."), part)


def _taxi_batch(rng: np.random.Generator, first_id: int, n: int, dirty: float) -> pl.DataFrame:
    start = rng.integers(0, TAXI_SECONDS, n)
    minutes = rng.gamma(2.0, 7.0, n)
    distance = np.round(rng.gamma(1.6, 1.9, n) * 100).astype(np.int64)  # hundredths of a mile
    fare = 300 + distance * 250 // 100 + (minutes * 50).astype(np.int64)
    tip = np.where(rng.random(n) < 0.6, fare * rng.integers(0, 30, n) // 100, 0)
    surcharge = np.where(rng.random(n) < 0.7, 250, 0)
    payment = rng.choice(len(PAYMENTS), n, p=[0.7, 0.27, 0.02, 0.01])
    passengers = rng.choice(7, n, p=[0.02, 0.68, 0.15, 0.06, 0.04, 0.03, 0.02])
    df = pl.DataFrame(
        {
            "__id": np.arange(first_id, first_id + n),
            "__start": start,
            "__minutes": minutes,
            "__distance": distance,
            "__fare": fare,
            "__tip": tip,
            "__surcharge": surcharge,
            "Vendor": np.array(VENDORS)[rng.choice(3, n, p=[0.45, 0.5, 0.05])],
            "Pickup Borough": np.array(BOROUGHS)[rng.choice(len(BOROUGHS), n, p=BOROUGH_WEIGHTS)],
            "Passenger Count": passengers.astype(str),
            "Payment Type": np.array(PAYMENTS)[payment],
            "Store and Fwd": np.where(rng.random(n) < 0.01, "Y", "N"),
            "__kind": np.where(rng.random(n) < dirty, rng.integers(0, TAXI_DIRT, n), -1),
            "__spelling": np.array(VENDOR_SPELLINGS)[rng.integers(0, len(VENDOR_SPELLINGS), n)],
        }
    )
    pickup = pl.lit(TAXI_YEAR_START) + pl.duration(seconds=pl.col("__start"))
    dropoff = pickup + pl.duration(seconds=(pl.col("__minutes") * 60).cast(pl.Int64))
    df = df.with_columns(
        pl.format("T{}", pl.col("__id").cast(pl.String).str.zfill(9)).alias("Trip ID"),
        pickup.dt.strftime("%Y-%m-%d %H:%M:%S").alias("Pickup Datetime"),
        dropoff.dt.strftime("%Y-%m-%d %H:%M:%S").alias("Dropoff Datetime"),
        _money(pl.col("__distance")).alias("Trip Distance"),
        _money(pl.col("__fare")).alias("Fare Amount"),
        _money(pl.col("__tip")).alias("Tip Amount"),
        _money(pl.col("__fare") + pl.col("__tip") + pl.col("__surcharge")).alias("Total Amount"),
        _money(pl.col("__surcharge")).alias("Congestion Surcharge"),
        pickup.dt.strftime("%m/%d/%Y %I:%M:%S %p").alias("__pickup_us"),
    )
    return _taxi_dirt(df).select(TAXI_COLUMNS)


def _taxi_dirt(df: pl.DataFrame) -> pl.DataFrame:
    """Each dirty row gets one problem; kinds 8 to 11 are cosmetic and cleaned, not rejected."""
    k = pl.col("__kind")

    def dirt(column: str, *cases: tuple[int, pl.Expr]) -> pl.Expr:
        expr = pl.when(k == cases[0][0]).then(cases[0][1])
        for kind, value in cases[1:]:
            expr = expr.when(k == kind).then(value)
        return expr.otherwise(pl.col(column)).alias(column)

    return df.with_columns(
        dirt("Pickup Datetime", (0, pl.lit("")), (1, pl.lit("not recorded")), (10, pl.col("__pickup_us"))),
        dirt("Fare Amount", (2, pl.concat_str(pl.lit("-"), pl.col("Fare Amount")))),
        dirt("Vendor", (3, pl.lit("XYZ")), (8, pl.col("__spelling"))),
        dirt("Trip ID", (4, pl.col("Trip ID").str.slice(1))),
        dirt("Trip Distance", (5, pl.concat_str(pl.col("Trip Distance"), pl.lit("7")))),
        dirt("Store and Fwd", (6, pl.lit("maybe"))),
        dirt("Passenger Count", (7, pl.lit("12")), (9, pl.lit("NA"))),
        dirt("Pickup Borough", (11, pl.concat_str(pl.lit("  "), pl.col("Pickup Borough").str.to_lowercase(), pl.lit(" ")))),
    )


def taxi_trips(path: Path | str, rows: int, *, seed: int = 7, dirty: float = 0.02, duplicates: float = 0.01) -> Path:
    """Write ``rows`` data rows (duplicates included) of taxi-trip CSV to ``path``, CRLF line ends.

    One trip per row over 2024 in New York local time (so the daylight-saving gap and repeat
    occur), decimals as money, optional passenger counts, a column the contract does not know
    (drift), and a few per cent of dirt: every row reason the contract can give, plus cosmetic
    problems (spellings, case, padding, a US date format) that cleaning fixes. A duplicate is a
    later copy of a trip, which the contract's key (the trip id) drops."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = 0
    with open(path, "wb") as fh:
        while written < rows:
            target = min(BATCH_ROWS, rows - written)
            copies = int(target * duplicates)
            batch = _taxi_batch(rng, written + 1, target - copies, dirty)
            if copies and batch.height:
                batch = pl.concat([batch, batch[rng.integers(0, batch.height, copies).tolist()]])
                batch = batch[rng.permutation(batch.height).tolist()]
            batch.write_csv(fh, include_header=written == 0, quote_style="necessary", line_terminator="\r\n")
            written += batch.height
    return path


GENERATORS = {"bank_transactions": bank_transactions, "taxi_trips": taxi_trips}
