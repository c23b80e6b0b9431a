"""The source hands the transform record-aligned segments from memory, read ahead in a thread."""

from __future__ import annotations

import gzip

import pytest

from shared.core import source
from shared.core.errors import FileRefused

HEADER = b"Date,Domain,Location,Value,Transaction_count\n"


def blocks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("block", [1, 7, 100, 4096])
def test_segments_are_bounded_record_aligned_and_add_up_to_the_body(block):
    record = b'1/1/2022,RETAIL,"Goa, ""North""\nside",5,1\n'
    body = record * 500
    src = source.open_source(blocks(HEADER + body, block), chunk_bytes=1_000)
    segments = list(src.segments())
    assert b"".join(segments) == body
    assert all(s.endswith(b"\n") and s.count(b'"') % 2 == 0 for s in segments)
    assert all(len(s) <= 1_000 for s in segments)  # a record is shorter than a segment here
    text = len(HEADER) - 1 + len(body)  # the header without its line end, as before
    assert (src.segment_count, src.bytes_text, src.bytes_in) == (len(segments), text, len(HEADER + body))


def test_a_record_longer_than_a_segment_gets_a_segment_of_its_own():
    long = b'1/1/2022,RETAIL,"' + b"x" * 5_000 + b'",5,1\n'
    body = b"1/1/2022,RETAIL,Goa,5,1\n" * 10 + long + b"1/1/2022,RETAIL,Goa,5,1\n" * 10
    segments = list(source.open_source(blocks(HEADER + body, 300), chunk_bytes=1_000).segments())
    assert b"".join(segments) == body
    assert any(long in s for s in segments)


def test_a_last_record_without_a_line_end_gets_one():
    src = source.open_source([HEADER + b"1/1/2022,RETAIL,Goa,5,1"])
    assert list(src.segments()) == [b"1/1/2022,RETAIL,Goa,5,1\n"]


def test_an_error_while_reading_ahead_is_raised_to_the_reader():
    body = b"".join(b"1/%d/2022,RETAIL,Goa,%d,1\n" % (1 + i % 28, i) for i in range(200_000))
    whole = gzip.compress(HEADER + body)
    src = source.open_source(blocks(whole[: len(whole) * 3 // 4], 65_536), chunk_bytes=100_000)  # cut short
    got = []
    with pytest.raises(FileRefused) as refused:
        for segment in src.segments():
            got.append(segment)
    assert refused.value.code == "undecodable" and got  # the good segments came first


def test_a_reader_that_stops_early_stops_the_thread():
    body = b"1/1/2022,RETAIL,Goa,5,1\n" * 100_000
    segments = source.open_source(blocks(HEADER + body, 10_000), chunk_bytes=50_000).segments()
    next(segments)
    segments.close()  # the producer thread is joined, not left behind
    import threading

    assert not any(t.name == "source-read-ahead" and t.is_alive() for t in threading.enumerate())


def test_segments_can_be_read_only_once():
    src = source.open_source([HEADER + b"1/1/2022,RETAIL,Goa,5,1\n"])
    list(src.segments())
    with pytest.raises(RuntimeError):
        list(src.segments())
