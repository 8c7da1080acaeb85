"""Parsed JSON objects with their line numbers, for readers that need whole records (SFT).

The pretraining readers keep one text field per record; chat records are nested, so here each
record is handed over whole, parsed by orjson. The same codecs, line blocks and array element
scanner are used; a line that is not JSON is counted as `invalid_json` with its `file:line`, and
one whose only fault is invalid UTF-8 is kept with U+FFFD and counted under `repaired`.
"""

import logging
from collections.abc import Iterator, Sequence

import orjson

from ..report import Report
from .compression import CorruptStream, open_stream
from .discovery import SourceFile
from .json_records import JSON_SPACE, ArrayElements, short_error
from .progress import FileProgress
from .textio import READ_BYTES, line_blocks, normalize_newlines, read_head

logger = logging.getLogger(__name__)

JSON_FORMATS = ("jsonl", "json")
# Records per yielded list: enough to batch the tokenizer, small enough to bound memory.
RECORDS_PER_BATCH = 1024


def read_json_objects(
    files: Sequence[SourceFile], report: Report, records_per_batch: int = RECORDS_PER_BATCH
) -> Iterator[tuple[str, list[tuple[int, object]]]]:
    """`(path, [(line, object), ...])`, file after file; a list never mixes files.

    In a JSON array the line is the element number, as in the pretraining readers. Files that
    are not JSON lines or JSON are listed in `files_skipped` as `not_json`. Each file's report
    entry gets `records`: every non-blank line or element, parsed or not.
    """
    for file in files:
        if file.format not in JSON_FORMATS:
            report.skip_file(file.path, "not_json")
            continue
        entry = report.add_file(file.path, format=file.format, codec=file.codec, records=0)
        with open_stream(file.path, file.codec) as stream:
            progress = FileProgress(report, file.path, entry, stream)
            batch: list[tuple[int, object]] = []
            line = 1
            try:
                for line, raw in _raw_records(stream):
                    entry["records"] += 1
                    obj = _parse(raw, report, file.path, line)
                    if obj is not None:
                        batch.append((line, obj))
                    if len(batch) >= records_per_batch:
                        entry["documents"] += len(batch)
                        yield file.path, batch
                        batch = []
            except CorruptStream as error:
                progress.corrupt(line + 1, error)
            if batch:
                entry["documents"] += len(batch)
                yield file.path, batch
            progress.finish()


def _parse(raw: bytes, report: Report, path: str, line: int):
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        first = error
    # orjson rejects invalid UTF-8 like a syntax error: a line that parses once its bad bytes
    # are replaced is kept and counted as repaired.
    text = raw.decode("utf-8", "replace")
    if "\ufffd" in text and "\ufffd" not in raw.decode("utf-8", "ignore"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
        else:
            report.repair("invalid_utf8", path, line)
            return obj
    report.skip("invalid_json", path, line, detail=short_error(first), found=short_error(first))
    return None


def _raw_records(stream) -> Iterator[tuple[int, bytes]]:
    """`(line, bytes)` of each non-blank JSON line, or of each element of a top-level array."""
    head, offset = read_head(stream, READ_BYTES)
    first = head.lstrip(JSON_SPACE)[:1]
    if first == b"[":
        for index, (data, _, _) in enumerate(ArrayElements(head, stream.read, READ_BYTES), 1):
            yield index, data
        return
    line = 1
    for block, _, has_cr in line_blocks(stream, READ_BYTES, head, offset):
        parts = (normalize_newlines(block) if has_cr else block).split(b"\n")
        if not parts[-1]:
            parts.pop()
        for number, raw in enumerate(parts, start=line):
            if raw and not raw.isspace():
                yield number, raw
        line += len(parts)
