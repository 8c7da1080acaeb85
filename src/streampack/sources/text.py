"""Plain text: one document per line, per blank-line separated paragraph, or per file.

Only LF, CRLF and lone CR end a line. `str.splitlines` would also split at U+2028, U+2029, U+0085,
form feed and more, which appear inside real documents, so blocks are split with `str.split("\\n")`
after CR normalization.
"""

from collections.abc import Iterator

import numpy as np

from ..config import ReadConfig
from ..records import RecordBatch
from .compression import CorruptStream, SourceStream
from .progress import FileProgress, skip_lines
from .textio import BOM, Decoder, line_blocks, read_head, read_size


def read_text(
    stream: SourceStream, config: ReadConfig, progress: FileProgress
) -> Iterator[RecordBatch]:
    decode = Decoder(progress.path, progress.report, config.encoding, config.encoding_errors)
    if config.doc_mode == "line":
        return _by_line(stream, config.batch_bytes, progress, decode)
    if config.doc_mode == "paragraph":
        return _by_paragraph(stream, config.batch_bytes, progress, decode)
    return _whole_file(stream, progress, decode)


def _blank_indices(parts: list[str], expected: int) -> list[int]:
    """Indices of the `expected` blank entries of `parts`.

    Most blank lines are empty, and `list.index` finds those at C speed; a second pass over every
    line is only needed when some are whitespace-only.
    """
    found = []
    i = -1
    try:
        while True:
            i = parts.index("", i + 1)
            found.append(i)
    except ValueError:
        pass
    if len(found) == expected:
        return found
    return [i for i, part in enumerate(parts) if not part or part.isspace()]


def _drop(parts: list[str], first_line: int, dropped: dict[int, int]) -> None:
    """Blank out the lines of `dropped` (counted already) so that the reader passes over them."""
    for line in dropped:
        if 0 <= line - first_line < len(parts):
            parts[line - first_line] = ""
    dropped.clear()


def _by_line(
    stream: SourceStream, batch_bytes: int, progress: FileProgress, decode: Decoder
) -> Iterator[RecordBatch]:
    """Each non-blank line with its "\\n" kept, as MedicalGPT's `keep_linebreaks` does.

    Blank lines are counted as `empty_document` but are not problems: in a text file they
    separate documents.
    """
    path, report = progress.path, progress.report
    line = 1
    texts: list[str] = []
    starts: list[np.ndarray] = []
    pending = 0
    read = read_size(batch_bytes)
    broken = None
    try:
        head, start = read_head(stream, read)
        for block, offset, has_cr in line_blocks(stream, read, head, start):
            parts = decode(block, has_cr, offset, line).split("\n")
            dropped = ()
            if decode.dropped:
                # Lines dropped for their bytes are counted already, not again as blank lines.
                dropped = set(decode.dropped)
                _drop(parts, line, decode.dropped)
            # "" when the block ends with a line break; else the unterminated last line of the file.
            tail = parts.pop()
            count = len(parts)
            docs = [part + "\n" for part in parts if part and not part.isspace()]
            if len(docs) == count:
                lines = np.arange(line, line + count, dtype=np.int64)
            else:
                blank = _blank_indices(parts, count - len(docs))
                kept = np.ones(count, dtype=bool)
                kept[blank] = False
                empty = [line + i for i in blank if line + i not in dropped]
                skip_lines(report, "empty_document", path, empty, fatal=False)
                lines = np.flatnonzero(kept) + line
            if tail:
                if tail.isspace():
                    report.skip("empty_document", path, line + count, fatal=False)
                else:
                    docs.append(tail)
                    lines = np.append(lines, line + count)
                count += 1
            line += count
            texts += docs
            starts.append(lines)
            pending += len(block)
            if pending > batch_bytes - read and texts:
                yield progress.batch(texts, np.concatenate(starts))
                texts, starts, pending = [], [], 0
    except CorruptStream as err:
        broken = err
    if texts:
        yield progress.batch(texts, np.concatenate(starts))
    if broken is not None:
        progress.corrupt(line, broken)


def _by_paragraph(
    stream: SourceStream, batch_bytes: int, progress: FileProgress, decode: Decoder
) -> Iterator[RecordBatch]:
    """Runs of non-blank lines joined by "\\n"; blank lines only separate, they are not records.

    Under `encoding_errors="skip"` a paragraph with a bad line is dropped whole.
    """
    line = 1
    paragraph: list[str] = []
    start = 0
    bad = False
    dropped: set[int] = set()
    docs: list[str] = []
    starts: list[int] = []
    pending = 0
    read = read_size(batch_bytes)
    broken = None
    try:
        head, first = read_head(stream, read)
        for block, offset, has_cr in line_blocks(stream, read, head, first):
            parts = decode(block, has_cr, offset, line).split("\n")
            if decode.dropped:
                dropped = set(decode.dropped)
                decode.dropped.clear()
            if not parts[-1]:
                parts.pop()
            for i, part in enumerate(parts):
                if part and not part.isspace():
                    if not paragraph:
                        start = line + i
                    paragraph.append(part)
                    if dropped and line + i in dropped:
                        bad = True
                elif paragraph:
                    if not bad:
                        docs.append("\n".join(paragraph))
                        starts.append(start)
                    paragraph, bad = [], False
            line += len(parts)
            pending += len(block)
            if pending > batch_bytes - read and docs:
                yield progress.batch(docs, starts)
                docs, starts, pending = [], [], 0
    except CorruptStream as err:
        broken = err
    # After a break the lines read so far are whole lines; their paragraph is kept as it is.
    if paragraph and not bad:
        docs.append("\n".join(paragraph))
        starts.append(start)
    if docs:
        yield progress.batch(docs, starts)
    if broken is not None:
        progress.corrupt(line, broken)


def _whole_file(
    stream: SourceStream, progress: FileProgress, decode: Decoder
) -> Iterator[RecordBatch]:
    """The whole file is one document by definition, so it is the one read that is not bounded."""
    path, report = progress.path, progress.report
    try:
        data = stream.read()
        # A broken stream hands over what decompressed and raises on the next read: a cut file
        # is not a whole document.
        stream.read(1)
    except CorruptStream as err:
        progress.corrupt(1, err)
        return
    offset = 0
    if data.startswith(BOM):
        data, offset = data[len(BOM) :], len(BOM)
    text = decode(data, b"\r" in data, offset, 1)
    if decode.dropped:
        return
    if not text or text.isspace():
        report.skip("empty_document", path, 1)
        return
    yield progress.batch([text], [1])
