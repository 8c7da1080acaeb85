"""Line-aligned blocks of bytes, and UTF-8 decoding that counts what it repairs.

Reading whole lines per block is what keeps the text and JSON-lines readers fast and bounded:
one `read`, one `decode` and one `split` per block of `READ_BYTES`, and since `\\n` and `\\r`
never occur inside a UTF-8 multibyte sequence, a cut after a line break never splits a character.
"""

import codecs
from collections.abc import Iterator

from ..report import Report
from .compression import SourceStream
from .progress import count_lines

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
    back, since the next read may start with the `\\n` of the same CRLF.

    The reads of a line longer than `size` are held in a list and joined once, when its line
    break (or the end of the file) arrives: joining at every read copied the line again and again
    and held about three copies of it at the end; now the pieces and the joined block are two.
    """
    data = head or stream.read(size)
    # Reads (or their tails) since the last line break; `held_cr`: some of them hold a `\\r`.
    held: list = []
    held_bytes = 0
    held_cr = False
    while data:
        has_cr = b"\r" in data
        if held and held[-1][-1:] == b"\r" and data[:1] != b"\n":
            # The CR held back at the end of the previous read was a line break of its own.
            block = b"".join(held)
            held, held_bytes, held_cr = [], 0, False
            yield block, offset, True
            offset += len(block)
            del block
        cut = data.rfind(b"\n")
        if has_cr:
            cut = max(cut, data.rfind(b"\r", 0, len(data) - 1))
        if cut < 0:
            held.append(data)
            held_bytes += len(data)
            held_cr = held_cr or has_cr
            # Reads grow with the line: a few large pieces, which the allocator hands back to
            # the system when freed (measured: 256 KiB pieces stayed resident, 30 MB more RSS).
            data = stream.read(max(size, held_bytes))
            continue
        cut += 1
        tail = data[cut:] if cut < len(data) else b""
        if held:
            # A view, so that the read is not copied once more before the join.
            held.append(memoryview(data)[:cut])
            block = b"".join(held)
            has_cr = has_cr or held_cr
            held, held_bytes = [], 0
        else:
            block = data if cut == len(data) else data[:cut]
        # Only the block and the tail stay alive while the consumer works on the block.
        data = None
        yield block, offset, has_cr
        offset += len(block)
        del block
        if tail:
            held, held_bytes, held_cr = [tail], len(tail), b"\r" in tail
        else:
            held_cr = False
        data = stream.read(size)
    if held:
        block = b"".join(held)
        # The pieces go before the consumer decodes the block.
        held.clear()
        yield block, offset, held_cr


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
    dropped: bool = False,
) -> None:
    """Count each line of `bad`; past the kept locations one call carries the rest of the count.

    A repaired line is kept, so by default it goes to `repaired`; a line dropped under
    `encoding_errors="skip"` (`dropped=True`) is a problem, in `skipped`.
    """
    count = report.skip if dropped else report.repair
    kept = report.locations if dropped else report.repaired_locations
    items = sorted(bad.items())
    lines = [line for line, _ in items]
    details = [f"byte offset {position}" for _, position in items]
    count_lines(count, kept, reason, path, lines, details)


class Decoder:
    """Decodes line-aligned blocks to text with LF line breaks, per `encoding_errors`.

    `replace`: invalid bytes become U+FFFD and each line holding some is counted as repaired.
    `skip`: those lines are counted as skipped and left in `dropped` for the reader to drop (it
    clears the dict).
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
