"""The raw file as the parser sees it: decompressed, decoded to UTF-8, cut into record-aligned segments.

CSV arrives gzipped or not, as UTF-8 (with or without a BOM), UTF-16 or Windows-1252, with
LF, CRLF or lone CR line ends and the odd NUL byte. This module streams the bytes once, in
blocks, and hands out UTF-8 *segments* of bounded size that always end on a record boundary
(quotes are tracked so that a newline inside a quoted field never splits a record). The
transform parses each segment from memory as it arrives: no stage holds the whole file, and
nothing is written to local disk on the way in (on this kind of VM every byte written to the
page cache costs about as much as parsing it).

Each segment is made with one copy of its bytes (``bytes.join`` of the blocks, the last one
through a ``memoryview``), and a segment stays just under 32 MiB: glibc serves allocations
below its (dynamic) 32 MiB mmap threshold from the heap and reuses those pages, whereas
every larger buffer is a fresh mmap whose page faults cost 7x the copy itself (measured: a
64 MB join runs at 1.5 GB/s, a 30 MB one at 10 GB/s).

Files that cannot be CSV are refused here with a coded reason (``empty_file``, ``not_csv``,
``undecodable``) before any parsing starts.
"""

from __future__ import annotations

import codecs
import csv
import io
import queue
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.core.errors import FileRefused

SAMPLE_BYTES = 256 * 1024
DEFAULT_CHUNK_BYTES = 32 * 1024 * 1024
MAX_HEAP_SEGMENT = 32 * 1024 * 1024 - 4096  # just under glibc's largest mmap threshold (see above)
DELIMITER_CANDIDATES = (",", ";", "\t", "|")
ONE_COLUMN = "\x00"
"""The delimiter of a file whose header names one column: NUL bytes are removed before parsing
(``_strip_nul``), so no value is ever split and "late, again" stays one value."""
GZIP_MAGIC = b"\x1f\x8b"
BINARY_MAGIC = (b"PK\x03\x04", b"%PDF", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"\x7fELF", b"PAR1", b"BZh", b"\xfd7zXZ")


@dataclass
class Source:
    """What the transform needs to parse a file: its header and its record-aligned segments.

    ``segments()`` hands out the body once, in order, as in-memory UTF-8 segments (read ahead
    by a background thread while the caller parses the previous one). ``split()`` writes them
    to chunk files instead (``chunks``), for callers that want files."""

    header: list[str]
    delimiter: str
    quote: str | None
    eol: str
    encoding: str
    compressed: bool
    chunks: list[Path] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)
    header_bytes: int = 0
    body_bytes: int = 0  # bytes of the segments handed out so far
    segment_count: int = 0
    in_files: bool = False  # the body was written to ``chunks`` by ``split()``
    _body: Iterator[bytes] | None = field(default=None, repr=False)
    _counter: _Counter | None = field(default=None, repr=False)

    @property
    def bytes_in(self) -> int:
        """Bytes of the raw file read so far (all of it once the segments are consumed)."""
        return self._counter.total if self._counter else 0

    @property
    def bytes_text(self) -> int:
        return self.header_bytes + self.body_bytes

    def segments(self, read_ahead: int = 1) -> Iterator[bytes]:
        """The body as record-aligned UTF-8 segments, each ending with a line end."""
        if self.in_files:
            body: Iterator[bytes] = (p.read_bytes() for p in self.chunks)
        else:
            if self._body is None:
                raise RuntimeError("the segments of a source can be read only once")
            body, self._body = self._body, None
            if read_ahead > 0:
                body = _read_ahead(body, read_ahead)
        for segment in body:
            self.segment_count += 1
            self.body_bytes += len(segment)
            yield segment


def file_blocks(path: Path | str, block_bytes: int = 8 * 1024 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(block_bytes):
            yield block


def open_source(
    blocks: Iterable[bytes],
    *,
    delimiter: str | None = None,
    quote: str | None = '"',
    encoding: str = "auto",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Source:
    """Read the head of ``blocks`` (refusing what cannot be CSV), parse the header, and return
    a ``Source`` whose ``segments()`` streams the rest."""
    counter = _Counter(iter(blocks))
    raw = _peekable(counter)
    head = raw.peek(2)
    compressed = head.startswith(GZIP_MAGIC)
    stream: _Peekable = _peekable(_gunzip(raw)) if compressed else raw

    sample = stream.peek(SAMPLE_BYTES)
    if not _without_bom(sample).strip(b" \t\r\n\x00"):
        raise FileRefused("empty_file", "the file holds no data" if not sample else "the file holds only blank space")
    enc = _detect_encoding(sample, encoding)
    if not enc.startswith("utf-16"):
        _refuse_binary(sample)
    _decode_sample(sample, enc)

    texts = _transcode(stream, enc)
    notes: dict[str, int] = {}
    body = _strip_nul(texts, notes)
    first = _peekable(body)
    sample_text = first.peek(SAMPLE_BYTES)
    eol = "\r" if b"\n" not in sample_text and b"\r" in sample_text else "\n"  # old Mac line ends
    header_bytes = _first_record(first, sample_text, quote, eol)
    header_text = header_bytes.decode("utf-8").lstrip("\ufeff")
    delim = delimiter or _sniff_delimiter(header_text, quote)
    header = _parse_header(header_text, delim, quote)
    if not any(h.strip() for h in header):
        raise FileRefused("not_csv", "the first line is not a header of column names")
    return Source(
        header=header,
        delimiter=delim,
        quote=quote,
        eol=eol,
        encoding=enc,
        compressed=compressed,
        notes=notes,
        header_bytes=len(header_bytes),
        _body=_cut_segments(first, quote, eol, min(chunk_bytes, MAX_HEAP_SEGMENT)),
        _counter=counter,
    )


def split(
    blocks: Iterable[bytes],
    workdir: Path,
    *,
    delimiter: str | None = None,
    quote: str | None = '"',
    encoding: str = "auto",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Source:
    """Like ``open_source``, but write the segments to chunk files under ``workdir`` first."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = open_source(blocks, delimiter=delimiter, quote=quote, encoding=encoding, chunk_bytes=chunk_bytes)
    assert src._body is not None
    for i, segment in enumerate(src._body):
        path = workdir / f"chunk-{i:05d}.csv"
        path.write_bytes(segment)
        src.chunks.append(path)
    src._body, src.in_files = None, True
    return src


# --- byte streams --------------------------------------------------------------------------


class _Counter:
    def __init__(self, blocks: Iterator[bytes]) -> None:
        self.blocks = blocks
        self.total = 0

    def __iter__(self) -> Iterator[bytes]:
        for block in self.blocks:
            self.total += len(block)
            yield block


class _Peekable:
    """A block stream whose first bytes can be looked at without being consumed."""

    def __init__(self, blocks: Iterable[bytes]) -> None:
        self.blocks = iter(blocks)
        self.buffer = b""
        self.done = False

    def peek(self, n: int) -> bytes:
        while len(self.buffer) < n and not self.done:
            try:
                self.buffer += next(self.blocks)
            except StopIteration:
                self.done = True
        return self.buffer[:n]

    def take(self, n: int) -> bytes:
        self.peek(n)
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def __iter__(self) -> Iterator[bytes]:
        if self.buffer:
            yield self.buffer
            self.buffer = b""
        yield from self.blocks


def _peekable(blocks: Iterable[bytes]) -> _Peekable:
    return _Peekable(blocks)


def _gunzip(blocks: Iterable[bytes]) -> Iterator[bytes]:
    # wbits=47 accepts gzip; a new decompressor per member handles concatenated gzip files.
    inflater = zlib.decompressobj(wbits=47)
    member_open = False
    try:
        for block in blocks:
            while block:
                member_open = True
                out = inflater.decompress(block, 8 * 1024 * 1024)
                if out:
                    yield out
                while inflater.unconsumed_tail:
                    out = inflater.decompress(inflater.unconsumed_tail, 8 * 1024 * 1024)
                    if out:
                        yield out
                if inflater.eof:
                    block = inflater.unused_data
                    inflater = zlib.decompressobj(wbits=47)
                    member_open = False
                else:
                    block = b""
        tail = inflater.flush()
        if tail:
            yield tail
    except zlib.error as exc:
        raise FileRefused("undecodable", f"the gzip stream is corrupt: {exc}") from None
    if member_open and not inflater.eof:
        raise FileRefused("undecodable", "the gzip stream is truncated: the file was cut short")


# --- encodings ------------------------------------------------------------------------------


def _detect_encoding(sample: bytes, declared: str) -> str:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig" if declared in ("auto", "utf-8") else declared
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16" if declared in ("auto", "utf-16") else declared
    if declared == "utf-16":
        return "utf-16-le" if _looks_utf16(sample) != "be" else "utf-16-be"
    if declared != "auto":
        return declared
    guess = _looks_utf16(sample)
    if guess:
        return f"utf-16-{guess}"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        return "cp1252"


def _looks_utf16(sample: bytes) -> str | None:
    """UTF-16 without a BOM: ASCII text leaves a NUL in every other byte."""
    probe = sample[:4096]
    if len(probe) < 4:
        return None
    even, odd = probe[0::2], probe[1::2]
    if odd.count(0) > 0.4 * len(odd) and even.count(0) < 0.05 * len(even):
        return "le"
    if even.count(0) > 0.4 * len(even) and odd.count(0) < 0.05 * len(odd):
        return "be"
    return None


def _without_bom(sample: bytes) -> bytes:
    for bom in (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"):
        if sample.startswith(bom):
            return sample[len(bom) :]
    return sample


def _refuse_binary(sample: bytes) -> None:
    if sample.startswith(BINARY_MAGIC):
        raise FileRefused("not_csv", "the file is a binary format (its first bytes are a known file signature)")
    probe = sample[:65536]
    nul = probe.count(0)  # a stray NUL is removed and counted; many of them make a binary file
    control = sum(probe.count(bytes([b])) for b in (*range(1, 9), 11, 12, *range(14, 32)))
    if control > 0.05 * len(probe) or (nul > 0.05 * len(probe) and nul > 8):
        raise FileRefused(
            "not_csv", f"the file looks binary: {control + nul} of its first {len(probe)} bytes are control characters"
        )


def _decode_sample(sample: bytes, encoding: str) -> str:
    try:
        return codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
    except UnicodeDecodeError as exc:
        raise FileRefused(
            "undecodable", f"not valid {encoding} at byte {exc.start}: set [csv] encoding in the contract"
        ) from None
    except LookupError:
        raise FileRefused("undecodable", f"unknown encoding {encoding!r}") from None


def _transcode(blocks: Iterable[bytes], encoding: str) -> Iterator[bytes]:
    """UTF-8 out. UTF-8 input passes through untouched (polars rejects an invalid sequence,
    which the transform reports as ``undecodable``); anything else is decoded and re-encoded."""
    if encoding in ("utf-8", "utf-8-sig"):
        first = True
        for block in blocks:
            if first and block.startswith(codecs.BOM_UTF8):
                block = block[len(codecs.BOM_UTF8) :]
            first = False
            yield block
        return
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    try:
        for block in blocks:
            text = decoder.decode(block)
            offset += len(block)
            if text:
                yield text.encode("utf-8")
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail.encode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(
            "undecodable",
            f"not valid {encoding} near byte {offset + exc.start}; "
            "set [csv] encoding in the contract if the feed uses another one",
        ) from None


def _strip_nul(blocks: Iterable[bytes], notes: dict[str, int]) -> Iterator[bytes]:
    """NUL bytes carry no meaning in a text feed and PostgreSQL text cannot hold them."""
    for block in blocks:
        if b"\x00" in block:
            n = block.count(b"\x00")
            notes["nul_bytes_removed"] = notes.get("nul_bytes_removed", 0) + n
            block = block.replace(b"\x00", b"")
        yield block


# --- header and records ---------------------------------------------------------------------


def _first_record(stream: _Peekable, sample: bytes, quote: str | None, eol: str) -> bytes:
    """Consume and return the header record (without its line end)."""
    q = quote.encode() if quote else None
    e = eol.encode()
    in_quotes = False
    for i in range(len(sample)):
        ch = sample[i : i + 1]
        if q is not None and ch == q:
            in_quotes = not in_quotes
        elif ch == e and not in_quotes:
            record = stream.take(i + 1)[:-1]
            return record[:-1] if record.endswith(b"\r") and eol == "\n" else record
    if len(sample) >= SAMPLE_BYTES:
        raise FileRefused("not_csv", f"no end of the header line in the first {SAMPLE_BYTES} bytes")
    record = stream.take(len(sample))
    return record[:-1] if record.endswith(b"\r") else record


def _sniff_delimiter(header: str, quote: str | None) -> str:
    outside = header
    if quote:
        outside = "".join(part for i, part in enumerate(header.split(quote)) if i % 2 == 0)
    counts = {d: outside.count(d) for d in DELIMITER_CANDIDATES}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ONE_COLUMN


def _parse_header(header: str, delimiter: str, quote: str | None) -> list[str]:
    reader = csv.reader(
        io.StringIO(header),
        delimiter=delimiter,
        quotechar=quote or '"',
        quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
    )
    try:
        return next(reader, [])
    except csv.Error as exc:
        raise FileRefused("not_csv", f"the header line cannot be read: {exc}") from None


def _cut_segments(blocks: Iterable[bytes], quote: str | None, eol: str, limit: int) -> Iterator[bytes]:
    """Cut a block stream into segments of at most ``limit`` bytes (more only for a record
    that is itself longer) that end at a line end outside quotes.

    Every cut is made outside quotes, so the pending blocks start outside quotes and a line end
    ends a record exactly when the number of quote characters before it is even (an escaped
    quote is doubled and so keeps the parity). Each block's quote count is taken once."""
    q = quote.encode() if quote else None
    e = eol.encode()

    def parity(b: bytes) -> int:  # `in` is a memchr: most feeds have no quote in most blocks
        return b.count(q) & 1 if q is not None and q in b else 0

    pending: list[bytes] = []
    parities: list[int] = []
    size = 0
    for block in blocks:
        if not block:
            continue
        pending.append(block)
        parities.append(parity(block))
        size += len(block)
        while size >= limit:
            cut = _find_cut(pending, parities, q, e, limit)
            if cut is None:
                break  # one record longer than a segment and not complete yet: keep reading
            i, pos = cut
            with memoryview(pending[i]) as view:
                yield b"".join([*pending[:i], view[:pos]])
                tail = bytes(view[pos:])
            pending = [tail, *pending[i + 1 :]] if tail else pending[i + 1 :]
            parities = [parity(b) for b in pending]
            size = sum(len(b) for b in pending)
    if pending:
        last = b"".join(pending)
        yield last if last.endswith(e) else last + e


def _find_cut(pending: list[bytes], parities: list[int], q: bytes | None, e: bytes, limit: int) -> tuple[int, int] | None:
    """(block index, offset just past the line end) of the last record end within ``limit``
    bytes, or failing that the first one after it; None if the blocks hold no record end."""
    starts, odd = [0], [0]  # offset and quote parity at the start of each block
    for b, p in zip(pending[:-1], parities[:-1], strict=True):
        starts.append(starts[-1] + len(b))
        odd.append(odd[-1] ^ p)

    def record_end(i: int, pos: int) -> bool:
        return q is None or (odd[i] + pending[i].count(q, 0, pos)) % 2 == 0

    for i in range(len(pending) - 1, -1, -1):  # backwards from the limit
        end = min(len(pending[i]), limit - starts[i])
        while end > 0 and (pos := pending[i].rfind(e, 0, end)) >= 0:
            if record_end(i, pos):
                return i, pos + 1
            end = pos
    for i in range(len(pending)):  # a record longer than the limit: the first end after it
        start = max(0, limit - starts[i])
        while (pos := pending[i].find(e, start)) >= 0:
            if record_end(i, pos):
                return i, pos + 1
            start = pos + 1
    return None


def _read_ahead(segments: Iterator[bytes], depth: int) -> Iterator[bytes]:
    """Produce ``segments`` in a background thread, at most ``depth`` ahead of the consumer.

    Reading, decompressing and cutting the next segment overlaps with parsing the current one
    (the parse runs in polars' threads without the GIL). The producer starts a segment only
    when fewer than ``depth`` wait, so at most ``depth`` + 1 segments exist at once. An
    exception in the producer is raised in the consumer; a consumer that stops early stops
    the producer."""
    q: queue.Queue[tuple[str, object]] = queue.Queue()
    room = threading.Semaphore(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                if not room.acquire(timeout=0.1):
                    continue
                segment = next(segments, None)
                if segment is None:
                    break
                q.put(("data", segment))
            q.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            q.put(("error", exc))

    thread = threading.Thread(target=produce, name="source-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item  # type: ignore[misc]
            yield item  # type: ignore[misc]
            room.release()  # the consumer has moved on
    finally:
        stop.set()
        thread.join()
