"""Tables: parquet (pyarrow, one column, in row batches) and CSV / TSV (the csv module).

The text column is chosen once per file from the schema or header, by the rule in `fields`.
"""

import csv
import logging
import os
from collections.abc import Iterator

from ..config import ReadConfig
from ..errors import SourceError
from ..records import RecordBatch
from .compression import CorruptStream, SourceStream
from .fields import choose_column
from .progress import FileProgress, skip_lines
from .textio import Decoder, line_blocks, read_head, read_size

logger = logging.getLogger(__name__)

# Documents can be several MB, far above the csv module's default field limit of 128 KiB.
_CSV_FIELD_LIMIT = 2**31 - 1
# Rows per parquet batch are sized from the column's average row, capped so that a column of
# tiny rows does not make one batch of millions of Python strings.
_MAX_ROWS = 1 << 16


def _is_string(pa, dtype) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    is_view = getattr(pa.types, "is_string_view", None)
    return (
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or (is_view is not None and is_view(dtype))
    )


def _log_fallback(path: str, column: str | None, text_field: str | None) -> None:
    if text_field is None and column not in (None, "text"):
        logger.info("%s: no 'text' column; reading the only string column %r", path, column)


def _rows_per_batch(metadata, column: str, batch_bytes: int) -> int:
    total = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            if chunk.path_in_schema == column:
                total += chunk.total_uncompressed_size
    per_row = max(1, total // max(1, metadata.num_rows))
    return max(1, min(_MAX_ROWS, batch_bytes // per_row))


def read_parquet(
    path: str, config: ReadConfig, progress: FileProgress, row_groups: list[int] | None = None
) -> Iterator[RecordBatch]:
    """One column of the file, read `iter_batches` at a time so a huge row group is never whole.

    `nbytes` of each batch is the file size prorated by rows: parquet decompresses page by page
    inside pyarrow, where the raw position cannot be observed. `row_groups` reads only those
    groups (a task of a split build); rows are then numbered from 1 at the first of them.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    report = progress.report
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        # A truncated parquet file loses its footer, so this is where truncation shows.
        progress.corrupt(1, err)
        return
    metadata = parquet.metadata
    rows = metadata.num_rows
    size = os.path.getsize(path)
    if row_groups is not None:
        # The file's bytes prorated by rows, so that the groups of a split add up to the file.
        before = sum(
            metadata.row_group(group).num_rows for group in range(min(row_groups, default=0))
        )
        rows = sum(metadata.row_group(group).num_rows for group in row_groups)
        total = max(1, metadata.num_rows)
        size = size * (before + rows) // total - size * before // total
    if rows == 0:
        return
    schema = parquet.schema_arrow
    if config.collect_fields:
        progress.entry["fields"] = {field.name: {str(field.type): rows} for field in schema}
    strings = [field.name for field in schema if _is_string(pa, field.type)]
    column = choose_column(schema.names, strings, config.text_field)
    _log_fallback(path, column, config.text_field)
    if column is None:
        names = ", ".join(repr(name) for name in schema.names[:8])
        report.skip("missing_text_field", path, 1, count=rows, found=f"columns {names}")
        return
    if column not in strings:
        kind = schema.field(column).type
        found = f"column {column!r} of type {kind}"
        report.skip("non_string_text", path, 1, count=rows, found=found)
        return
    done = 0
    try:
        batches = parquet.iter_batches(
            batch_size=_rows_per_batch(metadata, column, config.batch_bytes),
            row_groups=row_groups,
            columns=[column],
        )
        for batch in batches:
            values = batch.column(0).to_pylist()
            docs: list[str] = []
            lines: list[int] = []
            nulls: list[int] = []
            empty: list[int] = []
            for i, value in enumerate(values, start=done + 1):
                if value is None:
                    nulls.append(i)
                elif not value or value.isspace():
                    empty.append(i)
                else:
                    docs.append(value)
                    lines.append(i)
            if nulls and report.on_error == "raise":
                report.skip("non_string_text", path, nulls[0], found=f"null in {column!r}")
            skip_lines(report, "non_string_text", path, nulls)
            skip_lines(report, "empty_document", path, empty)
            before = size * done // rows
            done += len(values)
            if docs:
                yield progress.batch(docs, lines, nbytes=size * done // rows - before)
            else:
                progress.entry["bytes"] += size * done // rows - before
    except (pa.ArrowException, OSError) as err:
        progress.corrupt(done + 1, err)


def read_delimited(
    stream: SourceStream, config: ReadConfig, progress: FileProgress, delimiter: str
) -> Iterator[RecordBatch]:
    """CSV or TSV with a header row; `lines` are the physical lines where records start, so a
    quoted field spanning lines moves the next record's number on by as many lines."""
    path, report = progress.path, progress.report
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    decode = Decoder(path, report, config.encoding, config.encoding_errors)
    # Lines dropped for their bytes (encoding_errors="skip"); a record starting on one is dropped.
    dropped: set[int] = set()

    def physical_lines() -> Iterator[str]:
        # csv.reader counts one line per string it takes, so each string is one physical line.
        line = 1
        read = read_size(config.batch_bytes)
        head, start = read_head(stream, read)
        for block, offset, has_cr in line_blocks(stream, read, head, start):
            parts = decode(block, has_cr, offset, line).split("\n")
            if decode.dropped:
                dropped.update(decode.dropped)
                decode.dropped.clear()
            tail = parts.pop()
            line += len(parts)
            yield from [part + "\n" for part in parts]
            if tail:
                yield tail

    reader = csv.reader(physical_lines(), delimiter=delimiter)
    consumed = 0
    docs: list[str] = []
    lines: list[int] = []
    missing: list[int] = []
    empty: list[int] = []
    size = 0
    broken = None
    try:
        header = next(reader, None)
        if header is None:
            return
        consumed = reader.line_num
        column = choose_column(header, header, config.text_field)
        _log_fallback(path, column, config.text_field)
        index = -1 if column is None else header.index(column)
        if config.collect_fields:
            progress.entry["fields"] = {name: {"string": 0} for name in header}
        for row in reader:
            start, consumed = consumed + 1, reader.line_num
            if not row:
                continue
            if dropped and start in dropped:
                continue
            if index < 0 or len(row) <= index:
                if report.on_error == "raise":
                    found = f"{len(row)} fields, header {header!r}"
                    report.skip("missing_text_field", path, start, found=found)
                missing.append(start)
                continue
            value = row[index]
            if not value or value.isspace():
                if report.on_error == "raise":
                    report.skip("empty_document", path, start, found=f"{column!r} = {value!r}")
                empty.append(start)
                continue
            docs.append(value)
            lines.append(start)
            size += len(value)
            if size >= config.batch_bytes:
                yield progress.batch(docs, lines)
                docs, lines, size = [], [], 0
    except csv.Error as err:
        raise SourceError(
            f"{path}:{consumed + 1}: not valid {delimiter!r}-separated data: {err}"
        ) from err
    except CorruptStream as err:
        broken = err
    skip_lines(report, "missing_text_field", path, missing)
    skip_lines(report, "empty_document", path, empty)
    if docs:
        yield progress.batch(docs, lines)
    if broken is not None:
        # Counted after the last batch so that "after N records" includes it.
        progress.corrupt(consumed + 1, broken)
