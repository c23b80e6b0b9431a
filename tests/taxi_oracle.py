"""An independent recomputation of the taxi-trips contract, in plain Python with the csv module.

Like tests/oracle.py for the bank, it shares no code with the pipeline (no polars, no shared/,
not even the contract file): the rules of contracts/taxi_trips.toml are written out again
here by hand, so that a bug in the transform, the rules or the contract loader cannot hide by
being repeated. Slow, and only used on test-sized files.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
NULLS = {"", "NA", "N/A", "null"}
FORMATS = ("%Y-%m-%d %H:%M:%S", "%m/%d/%Y %I:%M:%S %p")
VENDOR_MAP = {"1": "CMT", "2": "VTS", "CREATIVE MOBILE": "CMT", "VERIFONE": "VTS"}
VENDORS = {"CMT", "VTS", "DDS"}
BOROUGHS = {"Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island", "EWR", "Unknown"}
PAYMENT_MAP = {"1": "card", "2": "cash", "3": "no charge", "4": "dispute", "credit card": "card"}
PAYMENTS = {"card", "cash", "no charge", "dispute", "unknown"}
TRUE, FALSE = {"y", "yes", "1", "true"}, {"n", "no", "0", "false"}
CENT = Decimal("0.01")

# A timestamp is stored in UTC but bucketed in its column's zone (the contract's pickup zone).
BUCKET_ZONE = NEW_YORK


class Reject(Exception):
    """A row refused: its reason code and the column it concerns (a control-flow signal)."""

    def __init__(self, reason: str, column: str | None) -> None:
        self.reason, self.column = reason, column


@dataclass
class Trip:
    trip_id: str
    vendor: str
    pickup_at: datetime
    borough: str
    passengers: int | None
    distance: Decimal
    fare: Decimal
    tip: Decimal | None
    total: Decimal


@dataclass
class Expected:
    read: int = 0
    valid: int = 0
    rejected: int = 0
    duplicate: int = 0
    reasons: dict[tuple[str, str | None], int] = field(default_factory=dict)
    trips: list[Trip] = field(default_factory=list)

    def add(self, other: Expected) -> Expected:
        """Two files loaded side by side: the view sees both files' trips (no cross-file dedup)."""
        merged = Expected(
            self.read + other.read, self.valid + other.valid, self.rejected + other.rejected, self.duplicate + other.duplicate
        )
        merged.trips = self.trips + other.trips
        return merged

    def monthly(self) -> dict[tuple[date, str], dict[str, object]]:
        groups: dict[tuple[date, str], list[Trip]] = {}
        for t in self.trips:
            local = t.pickup_at.astimezone(BUCKET_ZONE)
            groups.setdefault((date(local.year, local.month, 1), t.borough), []).append(t)
        return {
            key: {
                "trips": len(ts),
                "passengers": sum(t.passengers for t in ts if t.passengers is not None),
                "fare_total": sum((t.fare for t in ts), Decimal(0)),
                "distance_mean": float(sum((t.distance for t in ts), Decimal(0)) / len(ts)),
                "longest_trip": max(t.distance for t in ts),
                "first_pickup": min(t.pickup_at for t in ts),
                "vendors": len({t.vendor for t in ts}),
            }
            for key, ts in groups.items()
        }

    def hourly(self) -> dict[datetime, dict[str, object]]:
        groups: dict[datetime, list[Trip]] = {}
        for t in self.trips:
            groups.setdefault(t.pickup_at.replace(minute=0, second=0, microsecond=0), []).append(t)
        return {
            hour: {
                "trips": len(ts),
                "total_mean": float(sum((t.total for t in ts), Decimal(0)) / len(ts)),
                "tips": sum((t.tip for t in ts if t.tip is not None), Decimal(0)),
            }
            for hour, ts in groups.items()
        }


def _text(raw: str) -> str | None:
    value = raw.strip()
    return None if value in NULLS else value


def _required(raw: str, column: str) -> str:
    value = _text(raw)
    if value is None:
        raise Reject("missing_value", column)
    return value


def _timestamp(raw: str, column: str) -> datetime:
    text = _required(raw, column)
    for fmt in FORMATS:
        try:
            naive = datetime.strptime(text, fmt)
        except ValueError:
            continue
        local = naive.replace(tzinfo=NEW_YORK, fold=0)  # fold=0: the earlier of a repeated time
        instant = local.astimezone(UTC)
        if instant.astimezone(NEW_YORK).replace(tzinfo=None) != naive:
            raise Reject("invalid_timestamp", column)  # skipped by the spring-forward change
        return instant
    raise Reject("invalid_timestamp", column)


def _money(text: str | None, column: str, low: Decimal | None, high: Decimal | None) -> Decimal | None:
    if text is None:
        return None
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", text):
        raise Reject("invalid_number", column)
    value = Decimal(text)
    if value.quantize(CENT) != value:
        raise Reject("invalid_number", column)
    if (low is not None and value < low) or (high is not None and value > high):
        raise Reject("out_of_range", column)
    return value


def _choice(text: str | None, column: str, mapping: dict[str, str], allowed: set[str]) -> str | None:
    if text is None:
        return None
    value = mapping.get(text, text)
    if value not in allowed:
        raise Reject("not_allowed", column)
    return value


def _trip(get: dict[str, str]) -> Trip:
    """Column by column in the contract's order; within a column: missing, type, range,
    allowed values, pattern. The first broken rule is the row's reason."""
    trip_id = _required(get["trip id"], "trip_id").upper()
    if not re.fullmatch(r"T\d{9}", trip_id):
        raise Reject("pattern_mismatch", "trip_id")
    vendor = _choice(_required(get["vendor"], "vendor").upper(), "vendor", VENDOR_MAP, VENDORS)
    pickup = _timestamp(get["pickup datetime"], "pickup_at")
    _timestamp(get["dropoff datetime"], "dropoff_at")
    borough = _choice(_required(get["pickup borough"], "pickup_borough").title(), "pickup_borough", {"Ewr": "EWR"}, BOROUGHS)
    passengers_text = _text(get["passenger count"])
    passengers = None
    if passengers_text is not None:
        if not re.fullmatch(r"[+-]?\d+", passengers_text):
            raise Reject("invalid_number", "passenger_count")
        passengers = int(passengers_text)
        if not 0 <= passengers <= 9:
            raise Reject("out_of_range", "passenger_count")
    distance = _money(_required(get["trip distance"], "trip_distance"), "trip_distance", Decimal(0), Decimal(500))
    payment = _text(get["payment type"])
    _choice(payment.lower() if payment is not None else None, "payment_type", PAYMENT_MAP, PAYMENTS)
    fare = _money(_required(get["fare amount"], "fare_amount"), "fare_amount", Decimal(0), None)
    tip = _money(_text(get["tip amount"]), "tip_amount", Decimal(0), None)
    total = _money(_required(get["total amount"], "total_amount"), "total_amount", Decimal(0), None)
    flag = _text(get["store and fwd"])
    if flag is not None and flag.lower() not in TRUE | FALSE:
        raise Reject("invalid_boolean", "store_and_forward")
    return Trip(trip_id, vendor, pickup, borough, passengers, distance, fare, tip, total)  # type: ignore[arg-type]


def taxi(path: Path | str) -> Expected:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    header = [h.strip().casefold() for h in rows[0]]
    exp = Expected()
    seen: set[str] = set()
    for record in rows[1:]:
        exp.read += 1
        try:
            if len(record) > len(header) and any(v != "" for v in record[len(header) :]):
                raise Reject("ragged_row", None)
            trip = _trip({name: (record[i] if i < len(record) else "") for i, name in enumerate(header)})
        except Reject as r:
            exp.rejected += 1
            exp.reasons[(r.reason, r.column)] = exp.reasons.get((r.reason, r.column), 0) + 1
            continue
        if trip.trip_id in seen:
            exp.duplicate += 1
            continue
        seen.add(trip.trip_id)
        exp.valid += 1
        exp.trips.append(trip)
    return exp
