"""Where each record of a segment starts, and how many fields it has, counted from its bytes.

polars parses a segment into rows, one per record, but tells neither where a row started in
the file (a quoted field can hold line ends, so a record's physical line is not its row
number) nor how many fields it had (a missing trailing field and an empty one are both null,
and the fields past the schema are dropped). The transform needs both: a rejected row is
reported at its line, and a row with fewer or more fields than the header is ``ragged_row``.
So they are counted from the segment's bytes, with polars and numpy over whole arrays (no
Python per row or per byte):

* ``census``, for every segment and cheap (15 ms for 32 MB of the bank file, some 2% of what
  the transform spends on them): where the quote characters are, and how many delimiters and
  line ends are outside and inside quotes. With the rows polars produced, these totals
  usually settle both questions: no line end inside quotes means no record spans two lines;
  as many delimiters outside quotes as the fields the rows visibly have means no row has a
  field polars could not see (the transform checks);
* ``layout``, only for a segment whose totals do not settle it: the position of every line
  end and of every delimiter outside quotes, by blocks of the segment so that the extra
  memory stays a fraction of the segment's size. It is dearer: 50 ms for the lines alone,
  150 to 250 ms with the fields, per 32 MB (a feed that ends most rows with an empty field,
  or quotes every field, pays that on every segment).

A quote character opens or closes a quoted stretch wherever it is, as ``shared.core.source`` cuts
segments (a doubled quote inside a quoted field closes and reopens it, and so keeps the
parity), so a segment starts and ends outside quotes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

BLOCK = 4 * 1024 * 1024
"""Bytes of a segment looked at at once by ``layout``."""
QUOTED_CHEAP = 1024 * 1024
"""At most this many bytes inside quotes are counted by ``census`` itself; more, and only
``layout`` counts the delimiters outside quotes."""


@dataclass
class Census:
    """The totals of one segment; None where too much is quoted to count them cheaply."""

    quoted_line_ends: int | None  # line ends inside quotes: the records' lines past their first
    delimiters: int | None  # delimiters outside quotes
    quotes: np.ndarray  # positions of the quote characters, ascending


def census(segment: bytes, delimiter: str, quote: str | None, eol: str) -> Census:
    """Count the quote characters, the delimiters outside quotes and the line ends inside them."""
    view = np.frombuffer(segment, np.uint8)
    data = pl.Series("b", view).to_frame()  # no copy; polars compares into bitmasks, 3x numpy's speed
    delimiters = int(data.select((pl.col("b") == ord(delimiter)).sum()).item())
    quotes = np.zeros(0, np.int64)
    if quote and quote.encode() in segment:
        quotes = _positions(view, ord(quote))
    inside = _quoted_bytes(view, quotes)
    if inside is None:
        return Census(None, None, quotes)
    quoted = np.count_nonzero(inside == ord(eol)), np.count_nonzero(inside == ord(delimiter))
    return Census(int(quoted[0]), delimiters - int(quoted[1]), quotes)


def _positions(view: np.ndarray, byte: int) -> np.ndarray:
    """Where ``byte`` occurs, by blocks: a comparison of the whole segment at once would be a
    fresh 32 MB mapping each time, whose page faults cost more than the comparison."""
    found = [np.flatnonzero(view[b : b + BLOCK] == byte) + b for b in range(0, len(view), BLOCK)]
    return np.concatenate([np.zeros(0, np.int64), *found])


def _quoted_bytes(view: np.ndarray, quotes: np.ndarray) -> np.ndarray | None:
    """The bytes inside quotes, gathered (None when there are more than ``QUOTED_CHEAP``)."""
    if not len(quotes):
        return view[:0]
    starts = quotes[0::2] + 1
    ends = quotes[1::2]
    if len(ends) < len(starts):  # an unbalanced quote runs to the end of the segment
        ends = np.append(ends, len(view))
    lengths = ends - starts
    total = int(lengths.sum())
    if total > QUOTED_CHEAP:
        return None
    # index of every byte inside quotes: each stretch's start, repeated, plus a running offset
    offsets = np.cumsum(lengths) - lengths
    return view[np.repeat(starts - offsets, lengths) + np.arange(total)]


def layout(
    segment: bytes, delimiter: str, quote: str | None, eol: str, quotes: np.ndarray, *, fields: bool
) -> tuple[int, np.ndarray, np.ndarray | None]:
    """The segment's lines and, for each of its records, the line it starts on (from 0) and,
    with ``fields``, how many fields it has. ``quotes`` are the quote characters' positions
    (``Census.quotes``)."""
    view = np.frombuffer(segment, np.uint8)
    bounds = range(0, len(view), BLOCK)
    line_ends = _positions(view, ord(eol))
    if len(quotes):
        record_end = _outside(line_ends, quotes)
        ends_at = np.flatnonzero(record_end)  # which line ends end a record
    else:
        ends_at = np.arange(len(line_ends))
    first_line = np.zeros(len(ends_at), np.int64)
    first_line[1:] = ends_at[:-1] + 1
    if not fields:
        return len(line_ends), first_line, None
    ends = line_ends[ends_at]
    before = np.zeros(len(ends), np.int64)  # delimiters outside quotes before each record's end
    total = 0
    for b in bounds:
        found = np.flatnonzero(view[b : b + BLOCK] == ord(delimiter)) + b
        if len(quotes):
            found = found[_outside(found, quotes)]
        lo, hi = np.searchsorted(ends, [b, b + BLOCK])
        before[lo:hi] = total + np.searchsorted(found, ends[lo:hi])
        total += len(found)
    return len(line_ends), first_line, np.diff(before, prepend=0) + 1


def _outside(positions: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """True where a position is outside quotes: an even number of quote characters before it."""
    return (np.searchsorted(quotes, positions) & 1) == 0
