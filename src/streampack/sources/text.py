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
from .textio import BOM, decode_block, line_blocks, read_head, read_size


def read_text(
    stream: SourceStream, config: ReadConfig, progress: FileProgress
) -> Iterator[RecordBatch]:
    if config.doc_mode == "line":
        return _by_line(stream, config.batch_bytes, progress)
    if config.doc_mode == "paragraph":
        return _by_paragraph(stream, config.batch_bytes, progress)
    return _whole_file(stream, progress)


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


def _by_line(
    stream: SourceStream, batch_bytes: int, progress: FileProgress
) -> Iterator[RecordBatch]:
    """Each non-blank line with its "\\n" kept, as MedicalGPT's `keep_linebreaks` does."""
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
            parts = decode_block(block, has_cr, offset, line, path, report).split("\n")
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
                skip_lines(report, "empty_document", path, [line + i for i in blank])
                lines = np.flatnonzero(kept) + line
            if tail:
                if tail.isspace():
                    report.skip("empty_document", path, line + count)
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
    stream: SourceStream, batch_bytes: int, progress: FileProgress
) -> Iterator[RecordBatch]:
    """Runs of non-blank lines joined by "\\n"; blank lines only separate, they are not records."""
    path, report = progress.path, progress.report
    line = 1
    paragraph: list[str] = []
    start = 0
    docs: list[str] = []
    starts: list[int] = []
    pending = 0
    read = read_size(batch_bytes)
    broken = None
    try:
        head, first = read_head(stream, read)
        for block, offset, has_cr in line_blocks(stream, read, head, first):
            parts = decode_block(block, has_cr, offset, line, path, report).split("\n")
            if not parts[-1]:
                parts.pop()
            for i, part in enumerate(parts):
                if part and not part.isspace():
                    if not paragraph:
                        start = line + i
                    paragraph.append(part)
                elif paragraph:
                    docs.append("\n".join(paragraph))
                    starts.append(start)
                    paragraph = []
            line += len(parts)
            pending += len(block)
            if pending > batch_bytes - read and docs:
                yield progress.batch(docs, starts)
                docs, starts, pending = [], [], 0
    except CorruptStream as err:
        broken = err
    # After a break the lines read so far are whole lines; their paragraph is kept as it is.
    if paragraph:
        docs.append("\n".join(paragraph))
        starts.append(start)
    if docs:
        yield progress.batch(docs, starts)
    if broken is not None:
        progress.corrupt(line, broken)


def _whole_file(stream: SourceStream, progress: FileProgress) -> Iterator[RecordBatch]:
    """The whole file is one document by definition, so it is the one read that is not bounded."""
    path, report = progress.path, progress.report
    try:
        data = stream.read()
    except CorruptStream as err:
        progress.corrupt(1, err)
        return
    offset = 0
    if data.startswith(BOM):
        data, offset = data[len(BOM) :], len(BOM)
    text = decode_block(data, b"\r" in data, offset, 1, path, report)
    if not text or text.isspace():
        report.skip("empty_document", path, 1)
        return
    yield progress.batch([text], [1])
