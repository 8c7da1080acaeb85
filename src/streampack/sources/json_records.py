"""JSON lines (one object per line, orjson) and JSON arrays of objects (streamed with ijson).

A `.json` file is sniffed: a first non-whitespace byte `{` means JSON lines (the common export
format that is named `.json`), `[` means one array, streamed element by element.
"""

import codecs
import functools
import logging
from collections.abc import Iterator

import orjson

from ..config import ReadConfig
from ..records import RecordBatch
from ..report import Report
from .compression import CorruptStream, SourceStream
from .fields import MISSING, only_string
from .progress import FileProgress
from .textio import (
    invalid_utf8_lines,
    invalid_utf8_positions,
    line_blocks,
    normalize_newlines,
    read_head,
    read_size,
    report_invalid_utf8,
)

logger = logging.getLogger(__name__)

# Bytes ijson asks for per read: large enough that the C parser, not Python, sets the pace.
_IJSON_BUFFER = 256 << 10
# Parser messages can quote a whole line of input; the report keeps a short, single-line form.
_DETAIL_CHARS = 120

_JSON_SPACE = b" \t\r\n"


def _short(error: Exception) -> str:
    message = error.args[0] if error.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    lines = str(message).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:_DETAIL_CHARS]


def read_jsonl(
    stream: SourceStream, config: ReadConfig, progress: FileProgress
) -> Iterator[RecordBatch]:
    try:
        head, offset = read_head(stream, read_size(config.batch_bytes))
    except CorruptStream as err:
        progress.corrupt(1, err)
        return
    yield from _objects_by_line(stream, config, progress, head, offset, 1)


def read_json(
    stream: SourceStream, config: ReadConfig, progress: FileProgress
) -> Iterator[RecordBatch]:
    try:
        head, offset = read_head(stream, read_size(config.batch_bytes))
        line = 1
        # Leading whitespace longer than a block carries no records; drop it, keeping line numbers
        # (a final CR is kept back, since its LF may start the next read).
        while head and not head.lstrip(_JSON_SPACE):
            kept = b"\r" if head.endswith(b"\r") else b""
            dropped = head[: len(head) - len(kept)]
            line += dropped.count(b"\n") + dropped.count(b"\r") - dropped.count(b"\r\n")
            offset += len(dropped)
            more = stream.read(read_size(config.batch_bytes))
            head = kept + more if more else b""
    except CorruptStream as err:
        progress.corrupt(1, err)
        return
    first = head.lstrip(_JSON_SPACE)[:1]
    if not first:
        return
    if first == b"{":
        yield from _objects_by_line(stream, config, progress, head, offset, line)
    elif first == b"[":
        yield from _array(stream, config, progress, head, offset)
    else:
        progress.report.skip(
            "invalid_json",
            progress.path,
            line,
            detail=f"expected '[' (array) or '{{' (JSON lines) first, found {first!r}",
        )


def _objects_by_line(
    stream: SourceStream,
    config: ReadConfig,
    progress: FileProgress,
    head: bytes,
    start: int,
    line: int,
) -> Iterator[RecordBatch]:
    path, report = progress.path, progress.report
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    key = config.text_field or "text"
    fallback = config.text_field is None
    read = read_size(config.batch_bytes)
    docs: list[str] = []
    lines: list[int] = []
    pending = 0
    broken = None
    try:
        for block, offset, has_cr in line_blocks(stream, read, head, start):
            # orjson parses bytes directly, so the block is never decoded to str as a whole.
            parts = (normalize_newlines(block) if has_cr else block).split(b"\n")
            if not parts[-1]:
                parts.pop()
            bad_utf8 = None
            for i, raw in enumerate(parts, start=line):
                if not raw or raw.isspace():
                    continue
                try:
                    obj = loads(raw)
                except decode_error as err:
                    # orjson rejects invalid UTF-8 like a syntax error; tell the two apart here.
                    if bad_utf8 is None:
                        bad_utf8 = invalid_utf8_lines(block, offset, line)
                    if i not in bad_utf8:
                        report.skip("invalid_json", path, i, detail=_short(err))
                        continue
                    try:
                        obj = loads(raw.decode("utf-8", "replace"))
                    except decode_error as err2:
                        # Dropped as invalid JSON; its bytes are not also counted as repaired.
                        report.skip("invalid_json", path, i, detail=_short(err2))
                        continue
                    report_invalid_utf8(report, path, {i: bad_utf8[i]})
                if type(obj) is not dict:
                    report.skip("not_an_object", path, i)
                    continue
                value = obj.get(key, MISSING)
                if value is MISSING and fallback:
                    value = only_string(obj)
                if type(value) is not str:
                    reason = "missing_text_field" if value is MISSING else "non_string_text"
                    report.skip(reason, path, i)
                    continue
                if not value or value.isspace():
                    report.skip("empty_document", path, i)
                    continue
                docs.append(value)
                lines.append(i)
            line += len(parts)
            pending += len(block)
            if pending > config.batch_bytes - read and docs:
                yield progress.batch(docs, lines)
                docs, lines, pending = [], [], 0
    except CorruptStream as err:
        broken = err
    if docs:
        yield progress.batch(docs, lines)
    if broken is not None:
        progress.corrupt(line, broken)


class _ArrayInput:
    """What ijson reads: the sniffed head, then the stream, with invalid UTF-8 made valid.

    yajl stops at the first invalid UTF-8 byte, which would end the whole array; replacing it with
    U+FFFD keeps the element. ijson reads ahead, so the element is not known here: the count is
    made per invalid sequence with its byte offset instead of an element number.
    """

    def __init__(
        self, head: bytes, stream: SourceStream, offset: int, report: Report, path: str
    ) -> None:
        self._head = head
        self._stream = stream
        self._offset = offset
        self._report = report
        self._path = path
        self._pending = b""

    def read(self, size: int) -> bytes:
        while True:
            if self._head:
                data, self._head = self._head[:size], self._head[size:]
            else:
                data = self._stream.read(size)
            final = not data
            if self._pending:
                data, self._pending = self._pending + data, b""
            if not data:
                return b""
            try:
                used = codecs.utf_8_decode(data, "strict", final)[1]
            except UnicodeDecodeError:
                text, used = codecs.utf_8_decode(data, "replace", final)
                for position in invalid_utf8_positions(data[:used], final=True):
                    self._report.skip(
                        "invalid_utf8",
                        self._path,
                        detail=f"byte offset {self._offset + position}",
                    )
                out = text.encode("utf-8")
            else:
                out = data[:used]
            # An incomplete sequence at the end waits for the bytes of the next read.
            self._pending = data[used:]
            self._offset += used
            if out:
                return out


@functools.cache
def _ijson_backend():
    import ijson

    try:
        return ijson.get_backend("yajl2_c")
    except (ImportError, ValueError):
        logger.info("ijson's C backend (yajl2_c) is not available; JSON arrays parse slower")
        return ijson


def _array(
    stream: SourceStream,
    config: ReadConfig,
    progress: FileProgress,
    head: bytes,
    offset: int,
) -> Iterator[RecordBatch]:
    """Elements of a top-level array; `lines` are 1-based element numbers."""
    import ijson

    path, report = progress.path, progress.report
    key = config.text_field or "text"
    fallback = config.text_field is None
    source = _ArrayInput(head, stream, offset, report, path)
    index = 0
    docs: list[str] = []
    lines: list[int] = []
    size = 0
    broken = None
    try:
        for obj in _ijson_backend().items(source, "item", use_float=True, buf_size=_IJSON_BUFFER):
            index += 1
            if type(obj) is not dict:
                report.skip("not_an_object", path, index)
                continue
            value = obj.get(key, MISSING)
            if value is MISSING and fallback:
                value = only_string(obj)
            if type(value) is not str:
                reason = "missing_text_field" if value is MISSING else "non_string_text"
                report.skip(reason, path, index)
                continue
            if not value or value.isspace():
                report.skip("empty_document", path, index)
                continue
            docs.append(value)
            lines.append(index)
            size += len(value)
            if size >= config.batch_bytes:
                yield progress.batch(docs, lines)
                docs, lines, size = [], [], 0
    except ijson.JSONError as err:
        # The elements before the damage are kept; nothing after it can be located reliably.
        report.skip("invalid_json", path, index + 1, detail=_short(err))
    except CorruptStream as err:
        broken = err
    if docs:
        yield progress.batch(docs, lines)
    if broken is not None:
        # Counted after the last batch so that "after N records" includes it.
        progress.corrupt(index + 1, broken)
