"""`read_batches`: every discovered file, opened through its codec and parsed by its format."""

import logging
from collections.abc import Iterator, Sequence
from functools import partial

from ..config import ReadConfig
from ..records import RecordBatch
from ..report import Report
from .compression import open_stream
from .discovery import SourceFile
from .json_records import read_json, read_jsonl
from .oversize import cap_documents
from .progress import FileProgress
from .tabular import read_delimited, read_parquet
from .text import read_text

logger = logging.getLogger(__name__)


# Readers of decompressed byte streams, by format; parquet is read from its path instead.
_STREAM_READERS = {
    "text": read_text,
    "jsonl": read_jsonl,
    "json": read_json,
    "csv": partial(read_delimited, delimiter=","),
    "tsv": partial(read_delimited, delimiter="\t"),
}


def read_batches(
    files: Sequence[SourceFile], config: ReadConfig, report: Report
) -> Iterator[RecordBatch]:
    """Batches of documents, file after file in the order given; a batch never mixes files.

    `config.format`, when set, overrides the format each file was discovered with.

    Each file gets its report entry (`format`, `codec`, `documents`, `bytes`) when it starts;
    every record that is not yielded is counted in `report.skipped` with its file and line;
    with `config.on_error="raise"` the first one raises a `DataError` instead.
    """
    report.on_error = config.on_error
    for batch in _read_files(files, config, report):
        if config.max_document_bytes is not None:
            batch = cap_documents(batch, config.max_document_bytes, config.oversize, report)
            if not batch.texts:
                continue
        yield batch


def _read_files(
    files: Sequence[SourceFile], config: ReadConfig, report: Report
) -> Iterator[RecordBatch]:
    for file in files:
        fmt = config.format or file.format
        # A parquet file is read by pyarrow from its footer, never through a codec.
        codec = "none" if fmt == "parquet" else file.codec
        entry = report.add_file(file.path, format=fmt, codec=codec)
        logger.debug("reading %s as %s (codec %s, %d bytes)", file.path, fmt, codec, file.size)
        if fmt == "parquet":
            progress = FileProgress(report, file.path, entry)
            yield from read_parquet(file.path, config, progress)
            continue
        with open_stream(file.path, codec) as stream:
            progress = FileProgress(report, file.path, entry, stream)
            yield from _STREAM_READERS[fmt](stream, config, progress)
            progress.finish()
