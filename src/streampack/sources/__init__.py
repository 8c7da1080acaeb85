"""Reading: find files, open codecs, parse formats into batches of documents with provenance.

discover(sources)  ->  [SourceFile]        discovery.py: paths, folders, globs; format, codec
read_batches(files) -> RecordBatch ...     reader.py: one file after another
    compression.py   gzip / zstd / bz2 / xz streams, truncation surfaced as CorruptStream
    textio.py        line-aligned byte blocks, BOM, CR normalization, counted UTF-8 repair
    text.py          text files: per line, paragraph or file
    json_records.py  JSON lines and JSON arrays (element scanner), both parsed by orjson
    tabular.py       parquet (pyarrow) and CSV / TSV
"""

from .discovery import SourceFile, discover, source_names
from .reader import read_batches

__all__ = ["SourceFile", "discover", "read_batches", "source_names"]
