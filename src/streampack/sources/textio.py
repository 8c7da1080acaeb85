"""Line-aligned blocks of bytes, and UTF-8 decoding that counts what it repairs.

Reading whole lines per block is what keeps the text and JSON-lines readers fast and bounded:
one `read`, one `decode` and one `split` per block of `READ_BYTES`, and since `\\n` and `\\r`
never occur inside a UTF-8 multibyte sequence, a cut after a line break never splits a character.
"""

import codecs
from collections.abc import Iterator

from ..report import MAX_LOCATIONS, Report
from .compression import SourceStream

BOM = b"\xef\xbb\xbf"

# Bytes per read. Decoding and splitting run about 1.5x faster on 256 KiB blocks than on 4 MiB
# ones (measured on CJK text: the block, its str and the line list stay in cache), so readers
# read this much at a time and gather the documents of several blocks into one batch.
READ_BYTES = 256 << 10


def read_size(batch_bytes: int) -> int:
    return min(batch_bytes, READ_BYTES)


def read_head(stream: SourceStream, size: int) -> tuple[bytes, int]:
    """The first `size` bytes without a UTF-8 byte order mark, and the offset where they start.

    The streams fill every read up to `size` until end of file, so the 3-byte mark is never split.
    """
    head = stream.read(size)
    if head.startswith(BOM):
        return head[len(BOM) :], len(BOM)
    return head, 0


def line_blocks(
    stream: SourceStream, size: int, head: bytes = b"", offset: int = 0
) -> Iterator[tuple[bytes, int, bool]]:
    """Yield `(block, offset, has_cr)`: raw bytes cut just after a line break, and where they start.

    `head` is data already read from the stream at `offset`. Each block ends with `\\n` or `\\r`
    except the last one of a file that ends without a line break. A `\\r` as the final byte is held
    back, since the next read may start with the `\\n` of the same CRLF. A line longer than `size`
    grows the next read to the length already held, so the copying stays linear in the line length.
    """
    data = head or stream.read(size)
    carry = b""
    while data:
        buf = carry + data if carry else data
        has_cr = b"\r" in buf
        cut = buf.rfind(b"\n")
        if has_cr:
            cut = max(cut, buf.rfind(b"\r", 0, len(buf) - 1))
        if cut < 0:
            carry = buf
        else:
            cut += 1
            if cut == len(buf):
                carry = b""
                yield buf, offset, has_cr
            else:
                carry = buf[cut:]
                yield buf[:cut], offset, has_cr
            offset += cut
        data = stream.read(max(size, len(carry)))
    if carry:
        yield carry, offset, b"\r" in carry


def normalize_newlines(block: bytes) -> bytes:
    """CRLF and lone CR become LF; the caller checks for `\\r` first, which is the rare case."""
    return block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def invalid_positions(data: bytes, final: bool = True, encoding: str = "utf-8") -> Iterator[int]:
    """Offsets in `data` where a sequence invalid in `encoding` starts.

    With `final=False` an incomplete sequence at the very end is not reported (more data follows).
    """
    decode = codecs.getincrementaldecoder(encoding)().decode
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        try:
            decode(view[pos:], final)
            return
        except UnicodeDecodeError as err:
            yield pos + err.start
            pos += err.end
            decode = codecs.getincrementaldecoder(encoding)().decode


def _line_breaks(block: bytes, start: int, end: int) -> int:
    """Line breaks (LF, CRLF, lone CR) in `block[start:end]`; neither end splits a CRLF here."""
    return (
        block.count(b"\n", start, end)
        + block.count(b"\r", start, end)
        - block.count(b"\r\n", start, end)
    )


def invalid_lines(
    block: bytes, offset: int, first_line: int, encoding: str = "utf-8"
) -> dict[int, int]:
    """`{line: file offset of its first invalid byte}` for the raw (not CR-normalized) `block`."""
    found: dict[int, int] = {}
    line = first_line
    counted = 0
    for pos in invalid_positions(block, True, encoding):
        # An invalid byte is never a line break, so no CRLF straddles `counted` or `pos`.
        line += _line_breaks(block, counted, pos)
        counted = pos
        found.setdefault(line, offset + pos)
    return found


def encoding_reason(encoding: str) -> str:
    return "invalid_utf8" if encoding == "utf-8" else "invalid_encoding"


def report_invalid_utf8(
    report: Report,
    path: str,
    bad: dict[int, int],
    reason: str = "invalid_utf8",
    fatal: bool = False,
) -> None:
    """Count each line of `bad`; past the kept locations one call carries the rest of the count.

    A repaired line is kept, so by default the count is not a problem (`fatal=False`); a line
    dropped under `encoding_errors="skip"` is.
    """
    room = max(0, MAX_LOCATIONS - len(report.locations.get(reason, ())))
    items = sorted(bad.items())
    for line, position in items[:room]:
        report.skip(reason, path, line, detail=f"byte offset {position}", fatal=fatal)
    if len(items) > room:
        line, position = items[room]
        report.skip(
            reason,
            path,
            line,
            count=len(items) - room,
            detail=f"byte offset {position}",
            fatal=fatal,
        )


class Decoder:
    """Decodes line-aligned blocks to text with LF line breaks, per `encoding_errors`.

    `replace`: invalid bytes become U+FFFD and each line holding some is counted. `skip`: the
    same, and those lines are left in `dropped` for the reader to drop (it clears the dict).
    `raise`: a `DataError` names the first such line and its byte offset.
    """

    def __init__(self, path: str, report: Report, encoding: str = "utf-8", errors="replace"):
        self.path = path
        self.report = report
        self.encoding = encoding
        self.errors = errors
        self.reason = encoding_reason(encoding)
        self.dropped: dict[int, int] = {}

    def __call__(self, block: bytes, has_cr: bool, offset: int, first_line: int) -> str:
        data = normalize_newlines(block) if has_cr else block
        try:
            return data.decode(self.encoding)
        except UnicodeDecodeError:
            pass
        # CR and LF are ASCII, so normalizing does not change which lines hold invalid bytes;
        # offsets are taken from the raw block so they match the decompressed file.
        bad = invalid_lines(block, offset, first_line, self.encoding)
        self.bad(bad)
        return data.decode(self.encoding, "replace")

    def bad(self, bad: dict[int, int]) -> None:
        """Count (or raise for) the lines of `bad`, `{line: byte offset}`."""
        if not bad:
            return
        if self.errors == "raise":
            line, position = min(bad.items())
            self.report.fail(self.reason, self.path, line, found=f"a bad byte at offset {position}")
        report_invalid_utf8(self.report, self.path, bad, self.reason, self.errors == "skip")
        if self.errors == "skip":
            self.dropped.update(bad)
