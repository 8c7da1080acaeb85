"""Documents above `max_document_bytes`: split at line breaks, else sentence ends, else at the cap.

The cap is in UTF-8 bytes, the unit that tokenizer batches and memory are sized in. A hard cut is
moved back to the start of a character, so a piece is always valid text.
"""

import numpy as np

from ..records import RecordBatch
from ..report import Report

# Ends of sentences: the CJK full stops first (they need no following space), then Latin ones
# followed by a space, then Latin ones alone (which may also end "3.14" or "e.g", hence last).
_CJK_ENDS = tuple(mark.encode() for mark in "。！？")
_SPACED_ENDS = (b". ", b"! ", b"? ")
_BARE_ENDS = (b".", b"!", b"?")


def _cut(data: bytes, start: int, cap: int) -> int:
    """Where the piece of `data` starting at `start` ends: at most `cap` bytes on, never at 0."""
    end = start + cap
    if end >= len(data):
        return len(data)
    line = data.rfind(b"\n", start, end)
    if line >= start:
        return line + 1
    for ends in (_CJK_ENDS, _SPACED_ENDS, _BARE_ENDS):
        best = max(data.rfind(mark, start, end - len(mark) + 1) + len(mark) for mark in ends)
        if best > start + len(ends[0]) - 1:
            return best
    # A hard cut: back off continuation bytes (0b10xxxxxx) to the start of a character.
    while end > start and data[end] & 0xC0 == 0x80:
        end -= 1
    return end if end > start else start + cap


def split_document(text: str, cap: int) -> list[str]:
    """`text` in pieces of at most `cap` UTF-8 bytes each; whitespace-only pieces are left out.

    Only a window of `cap + 1` characters is encoded at a time, so a huge document costs its
    pieces and one window, never a second full copy of itself in bytes.
    """
    pieces = []
    start = 0
    while start < len(text):
        window = text[start : start + cap + 1]
        data = window.encode("utf-8")
        # The cut is at a character start, so the piece is the window's first characters.
        end = _cut(data, 0, cap)
        piece = window if end == len(data) else data[:end].decode("utf-8")
        if piece and not piece.isspace():
            pieces.append(piece)
        start += len(piece)
    return pieces


def _utf8_size(text: str) -> int:
    """UTF-8 bytes of `text`, encoding 1 MiB characters at a time to keep no full copy."""
    if text.isascii():
        return len(text)
    step = 1 << 20
    return sum(len(text[i : i + step].encode("utf-8")) for i in range(0, len(text), step))


def cap_documents(batch: RecordBatch, cap: int, oversize: str, report: Report) -> RecordBatch:
    """The batch with every document above `cap` bytes split (`oversize="split"`) or skipped."""
    texts = batch.texts
    # len(str) <= UTF-8 bytes <= 4 * len(str): most batches are cleared by this one C-speed pass.
    if max(map(len, texts), default=0) * 4 <= cap:
        return batch
    out: list[str] = []
    lines: list[int] = []
    for text, line in zip(texts, batch.lines.tolist(), strict=True):
        size = len(text) if len(text) * 4 <= cap else _utf8_size(text)
        if size <= cap:
            out.append(text)
            lines.append(line)
            continue
        if oversize == "skip":
            found = f"{size:,} bytes, cap {cap:,}"
            report.skip("document_too_large", batch.path, line, detail=found, found=found)
            continue
        pieces = split_document(text, cap)
        detail = f"{size:,} bytes into {len(pieces)} documents"
        report.repair("document_split", batch.path, line, count=len(pieces), detail=detail)
        out += pieces
        lines += [line] * len(pieces)
    return RecordBatch(batch.path, out, np.asarray(lines, dtype=np.int64), batch.nbytes)
