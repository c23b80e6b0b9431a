"""The raw file as the parser sees it: decompressed, decoded to UTF-8, cut into record-aligned chunks.

CSV arrives gzipped or not, as UTF-8 (with or without a BOM), UTF-16 or Windows-1252, with
LF, CRLF or lone CR line ends and the odd NUL byte. This module streams the bytes once, in
blocks, and writes UTF-8 chunk files of bounded size that always end on a record boundary
(quotes are tracked so that a newline inside a quoted field never splits a record). polars
then scans the chunks: no stage ever holds the whole file, and the memory-mapped pages of a
chunk are released when the scan moves past it.

Files that cannot be CSV are refused here with a coded reason (``empty_file``, ``not_csv``,
``undecodable``) before any parsing starts.
"""

from __future__ import annotations

import codecs
import csv
import io
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.faults import FileRefused

SAMPLE_BYTES = 256 * 1024
DEFAULT_CHUNK_BYTES = 32 * 1024 * 1024
DELIMITER_CANDIDATES = (",", ";", "\t", "|")
GZIP_MAGIC = b"\x1f\x8b"
BINARY_MAGIC = (b"PK\x03\x04", b"%PDF", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"\x7fELF", b"PAR1", b"BZh", b"\xfd7zXZ")


@dataclass
class Source:
    """What the transform needs to scan a file: its header and its record-aligned chunks."""

    header: list[str]
    chunks: list[Path]
    delimiter: str
    quote: str | None
    eol: str
    encoding: str
    compressed: bool
    bytes_in: int = 0
    bytes_text: int = 0
    notes: dict[str, int] = field(default_factory=dict)


def file_blocks(path: Path | str, block_bytes: int = 8 * 1024 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(block_bytes):
            yield block


def split(
    blocks: Iterable[bytes],
    workdir: Path,
    *,
    delimiter: str | None = None,
    quote: str | None = '"',
    encoding: str = "auto",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Source:
    """Stream ``blocks`` of a raw file into UTF-8 chunk files under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    counter = _Counter(iter(blocks))
    raw = _peekable(counter)
    head = raw.peek(2)
    compressed = head.startswith(GZIP_MAGIC)
    stream: _Peekable = _peekable(_gunzip(raw)) if compressed else raw

    sample = stream.peek(SAMPLE_BYTES)
    if not sample.strip(b" \t\r\n\x00"):
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
    chunks = _write_chunks(first, workdir, quote, eol, chunk_bytes)
    bytes_text = sum(p.stat().st_size for p in chunks) + len(header_bytes)
    return Source(
        header=header,
        chunks=chunks,
        delimiter=delim,
        quote=quote,
        eol=eol,
        encoding=enc,
        compressed=compressed,
        bytes_in=counter.total,
        bytes_text=bytes_text,
        notes=notes,
    )


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


def _refuse_binary(sample: bytes) -> None:
    if sample.startswith(BINARY_MAGIC):
        raise FileRefused("not_csv", "the file is a binary format (its first bytes are a known file signature)")
    probe = sample[:65536]
    control = sum(probe.count(bytes([b])) for b in (*range(0, 9), 11, 12, *range(14, 32)))
    if control > 0.05 * len(probe):
        raise FileRefused("not_csv", f"the file looks binary: {control} of its first {len(probe)} bytes are control characters")


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
    return best if counts[best] else ","


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


def _write_chunks(blocks: Iterable[bytes], workdir: Path, quote: str | None, eol: str, chunk_bytes: int) -> list[Path]:
    """Write record-aligned chunk files of about ``chunk_bytes`` (larger only for a record that
    is itself larger); a cut is only made at a line end outside quotes."""
    q = quote.encode() if quote else None
    e = eol.encode()
    paths: list[Path] = []
    pending = bytearray()

    def flush(data: bytes | bytearray) -> None:
        path = workdir / f"chunk-{len(paths):05d}.csv"
        path.write_bytes(data)
        paths.append(path)

    for block in blocks:
        pending += block
        while len(pending) >= chunk_bytes:
            cut = _record_cut(pending, q, e, chunk_bytes)
            if cut <= 0:
                break  # one record longer than a chunk and not complete yet: keep reading
            flush(pending[:cut])
            del pending[:cut]
    if pending:
        if not pending.endswith(e):
            pending += e
        flush(pending)
    return paths


def _record_cut(buf: bytearray, q: bytes | None, e: bytes, limit: int) -> int:
    """Index just past the last record-ending line end before ``limit`` (or, for a record
    longer than ``limit``, the first one after it); 0 if the buffer holds no complete record.

    The buffer always starts outside quotes (every cut is made outside quotes), so a line end
    ends a record exactly when the number of quote characters before it is even (an escaped
    quote is doubled and so keeps the parity)."""
    has_quotes = q is not None and buf.find(q) >= 0

    def outside(pos: int) -> bool:
        return not has_quotes or buf.count(q, 0, pos) % 2 == 0  # type: ignore[arg-type]

    end = limit
    while (pos := buf.rfind(e, 0, end)) >= 0:
        if outside(pos):
            return pos + 1
        end = pos
    start = limit
    while (pos := buf.find(e, start)) >= 0:
        if outside(pos):
            return pos + 1
        start = pos + 1
    return 0
