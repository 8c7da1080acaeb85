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
from .fields import MISSING, first_record_field, only_string
from .progress import FileProgress
from .textio import (
    Decoder,
    invalid_lines,
    invalid_positions,
    line_blocks,
    normalize_newlines,
    read_head,
    read_size,
)

logger = logging.getLogger(__name__)

# Bytes ijson asks for per read: large enough that the C parser, not Python, sets the pace.
_IJSON_BUFFER = 256 << 10
# Parser messages can quote a whole line of input; the report keeps a short, single-line form.
_DETAIL_CHARS = 120

_JSON_SPACE = b" \t\r\n"


def type_name(value) -> str:
    """The JSON name of a parsed value's type, for field tables and messages."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def count_fields(fields: dict[str, dict[str, int]], obj: dict) -> None:
    """Add the fields of `obj` and their JSON types to `fields`, `{name: {type: records}}`."""
    for name, value in obj.items():
        types = fields.get(name)
        if types is None:
            types = fields[name] = {}
        kind = type_name(value)
        types[kind] = types.get(kind, 0) + 1


def _text_of(obj, key: str, fallback: bool, report: Report, path: str, line: int):
    """The document of one parsed record, or None after counting why there is none."""
    if type(obj) is not dict:
        report.skip("not_an_object", path, line, found=f"a JSON {type_name(obj)}")
        return None
    value = obj.get(key, MISSING)
    if value is MISSING and fallback:
        value = only_string(obj)
    if type(value) is not str:
        if value is MISSING:
            names = ", ".join(repr(name) for name in list(obj)[:8]) or "no fields"
            report.skip("missing_text_field", path, line, found=f"fields {names}")
        else:
            report.skip(
                "non_string_text", path, line, found=f"field {key!r} of type {type_name(value)}"
            )
        return None
    if not value or value.isspace():
        report.skip("empty_document", path, line, found=f"field {key!r} = {value!r}")
        return None
    return value


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
    fields = progress.entry.setdefault("fields", {}) if config.collect_fields else None
    decode = Decoder(path, report, config.encoding, config.encoding_errors)
    # orjson parses UTF-8 bytes only; other encodings are decoded and re-encoded per block.
    transcode = config.encoding != "utf-8"
    read = read_size(config.batch_bytes)
    docs: list[str] = []
    lines: list[int] = []
    pending = 0
    broken = None
    try:
        for block, offset, has_cr in line_blocks(stream, read, head, start):
            if transcode:
                data = decode(block, has_cr, offset, line).encode("utf-8")
            else:
                # orjson parses bytes directly, so the block is never decoded to str as a whole.
                data = normalize_newlines(block) if has_cr else block
            parts = data.split(b"\n")
            if not parts[-1]:
                parts.pop()
            if decode.dropped:
                # Lines dropped for their bytes (transcoded files) are counted already.
                for dropped in decode.dropped:
                    if 0 <= dropped - line < len(parts):
                        parts[dropped - line] = b""
                decode.dropped.clear()
            bad_utf8 = None
            for i, raw in enumerate(parts, start=line):
                if not raw or raw.isspace():
                    continue
                try:
                    obj = loads(raw)
                except decode_error as err:
                    # orjson rejects invalid UTF-8 like a syntax error; tell the two apart here.
                    if bad_utf8 is None:
                        bad_utf8 = {} if transcode else invalid_lines(block, offset, line)
                    if i not in bad_utf8:
                        report.skip("invalid_json", path, i, detail=_short(err))
                        continue
                    try:
                        obj = loads(raw.decode("utf-8", "replace"))
                    except decode_error as err2:
                        # Dropped as invalid JSON; its bytes are not also counted as repaired.
                        report.skip("invalid_json", path, i, detail=_short(err2))
                        continue
                    decode.bad({i: bad_utf8[i]})
                    if decode.dropped:
                        decode.dropped.clear()
                        continue
                if fallback and type(obj) is dict:
                    key, fallback = first_record_field(obj), False
                # The common case inline; every other one goes through `_text_of`.
                if type(obj) is dict:
                    if fields is not None:
                        count_fields(fields, obj)
                    value = obj.get(key)
                    if type(value) is str and value and not value.isspace():
                        docs.append(value)
                        lines.append(i)
                        continue
                value = _text_of(obj, key, fallback, report, path, i)
                if value is not None:
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
    """What ijson reads: the sniffed head, then the stream, as valid UTF-8.

    yajl stops at the first invalid UTF-8 byte, which would end the whole array; replacing it with
    U+FFFD keeps the element. ijson reads ahead, so the element is not known here: the count is
    made per invalid sequence with its byte offset instead of an element number. Files in another
    `encoding` are decoded here and handed on as UTF-8.
    """

    def __init__(
        self, head: bytes, stream: SourceStream, offset: int, decode: Decoder, path: str
    ) -> None:
        self._head = head
        self._stream = stream
        self._offset = offset
        self._decode = decode
        self._path = path
        self._pending = b""
        self._utf8 = decode.encoding == "utf-8"
        # Other encodings go through one replacing decoder, which keeps a character cut by a read
        # for the next one; U+FFFD in its output is the (rare) sign to look for bad bytes.
        self._decoder = codecs.getincrementaldecoder(decode.encoding)("replace")

    def _check(self, data: bytes, final: bool) -> tuple[bytes, int]:
        """`(UTF-8 bytes, bytes of data used)`; an incomplete UTF-8 sequence at the end is left."""
        if self._utf8:
            try:
                used = codecs.utf_8_decode(data, "strict", final)[1]
                return data[:used], used
            except UnicodeDecodeError:
                text, used = codecs.utf_8_decode(data, "replace", final)
        else:
            text, used = self._decoder.decode(data, final), len(data)
            if "\ufffd" not in text:
                return text.encode("utf-8"), used
        positions = list(invalid_positions(data[:used], True, self._decode.encoding))
        self._count(positions)
        return text.encode("utf-8"), used

    def _count(self, positions: list[int]) -> None:
        decode = self._decode
        if positions and decode.errors == "raise":
            where = f"a bad byte at offset {self._offset + positions[0]}"
            decode.report.fail(decode.reason, self._path, found=where)
        # TODO(issue 3): encoding_errors="skip" replaces here too, since ijson reads ahead and
        # the element a bad byte belongs to is not known; dropping it needs byte offsets of
        # elements, which ijson's item stream does not give.
        for position in positions:
            where = f"byte offset {self._offset + position}"
            decode.report.skip(decode.reason, self._path, detail=where, fatal=False)

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
            out, used = self._check(data, final)
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
    decode = Decoder(path, report, config.encoding, config.encoding_errors)
    source = _ArrayInput(head, stream, offset, decode, path)
    fields = progress.entry.setdefault("fields", {}) if config.collect_fields else None
    index = 0
    docs: list[str] = []
    lines: list[int] = []
    size = 0
    broken = None
    try:
        for obj in _ijson_backend().items(source, "item", use_float=True, buf_size=_IJSON_BUFFER):
            index += 1
            if fields is not None and type(obj) is dict:
                count_fields(fields, obj)
            if fallback and type(obj) is dict:
                key, fallback = first_record_field(obj), False
            value = _text_of(obj, key, fallback, report, path, index)
            if value is None:
                continue
            docs.append(value)
            lines.append(index)
            size += len(value)
            if size >= config.batch_bytes:
                yield progress.batch(docs, lines)
                docs, lines, size = [], [], 0
    except ijson.JSONError as err:
        # The elements before the damage are kept; nothing after it can be located reliably.
        report.skip("invalid_json", path, index + 1, detail=_short(err), found=_short(err))
    except CorruptStream as err:
        broken = err
    if docs:
        yield progress.batch(docs, lines)
    if broken is not None:
        # Counted after the last batch so that "after N records" includes it.
        progress.corrupt(index + 1, broken)
