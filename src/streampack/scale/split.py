"""The task split: the discovered files cut into units, a deterministic list that any engine runs.

A unit is a whole file, a byte range of an uncompressed text or JSON lines file, or a run of row
groups of a parquet file. A byte range `[start, end)` owns every line that starts inside it, and
the cuts are moved to line starts when the split is made, so a unit reads exactly its bytes and no
line is lost or read twice. The split depends on the files (paths, sizes, first bytes) and on
`split_bytes` only, never on how many machines run it.
"""

import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass

from ..config import ReadConfig
from ..errors import ConfigError
from ..sources.discovery import SourceFile

# Bytes read at a time when a cut is moved forward to the next line start.
_SCAN_BYTES = 64 << 10
# Bytes sniffed to tell JSON lines from a JSON array in a `.json` file.
_SNIFF_BYTES = 64 << 10
# Smallest split: below this, tasks cost more in scheduling than they save.
MIN_SPLIT_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Unit:
    """One task of a split build.

    Attributes:
        index: position in the split; the store holds the units in this order.
        path: the file as discovered (what reports name).
        open_path: the same file as an absolute path, for workers in other folders or machines.
        format: the file's format as the report names it.
        reader: the reader used (`jsonl` for a byte range of a `.json` file of JSON lines).
        codec: "none" unless the unit is a whole compressed file.
        kind: `file` (the whole file), `bytes` (`[start, end)` in bytes) or `rows` (row groups
            `[start, end)` of a parquet file).
        start, end: the range, in bytes or row groups; a `file` unit has 0 and the file size.
        first_row: for `rows`, the rows of the file before the unit's first row group.
        size: bytes of the file the unit covers (for parquet, its row groups' compressed size).
    """

    index: int
    path: str
    open_path: str
    format: str
    reader: str
    codec: str
    kind: str
    start: int
    end: int
    first_row: int
    size: int

    @property
    def name(self) -> str:
        return f"u{self.index:05d}"

    def describe(self) -> str:
        if self.kind == "bytes":
            return f"{self.path} bytes {self.start}..{self.end}"
        if self.kind == "rows":
            return f"{self.path} row groups {self.start}..{self.end}"
        return self.path

    def as_dict(self) -> dict:
        return asdict(self)


def check_split_bytes(split_bytes: int) -> None:
    if split_bytes < MIN_SPLIT_BYTES:
        raise ConfigError(
            f"split_bytes must be at least {MIN_SPLIT_BYTES} (4 KiB), found {split_bytes}; "
            f"units of a few MB or more keep the cost of a task small"
        )


def plan_split(files: list[SourceFile], read: ReadConfig, split_bytes: int) -> list[Unit]:
    """The units of `files`, in file order and, within a file, in byte or row order."""
    check_split_bytes(split_bytes)
    units: list[Unit] = []
    for file in files:
        fmt = read.format or file.format
        base = {
            "path": file.path,
            "open_path": os.path.abspath(file.path),
            "format": fmt,
            "codec": "none" if fmt == "parquet" else file.codec,
        }
        pieces: list[dict] = []
        if fmt == "parquet" and file.size > split_bytes:
            pieces = _row_group_pieces(file.path, split_bytes)
        elif file.codec == "none" and file.size > split_bytes:
            reader = _line_reader(file.path, fmt, read)
            if reader is not None:
                pieces = [
                    {"reader": reader, "kind": "bytes", "start": start, "end": end}
                    for start, end in _byte_ranges(file.path, file.size, split_bytes)
                ]
                for piece in pieces:
                    piece["size"] = piece["end"] - piece["start"]
        if len(pieces) <= 1:
            pieces = [
                {"reader": fmt, "kind": "file", "start": 0, "end": file.size, "size": file.size}
            ]
        for piece in pieces:
            units.append(
                Unit(index=len(units), first_row=piece.pop("first_row", 0), **base, **piece)
            )
    return units


def _line_reader(path: str, fmt: str, read: ReadConfig) -> str | None:
    """The reader for byte ranges of this file, or None when it is read whole: a text file
    outside `doc_mode=line` (a paragraph could be cut), a JSON array, CSV (quoted fields span
    lines)."""
    if fmt == "jsonl" or (fmt == "text" and read.doc_mode == "line"):
        return fmt
    if fmt == "json":
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES).lstrip(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
        return "jsonl" if head[:1] == b"{" else None
    return None


def _byte_ranges(path: str, size: int, split_bytes: int) -> list[tuple[int, int]]:
    cuts = [0]
    with open(path, "rb") as handle:
        for nominal in range(split_bytes, size, split_bytes):
            if nominal <= cuts[-1]:
                # A line longer than the split already reaches past this cut.
                continue
            start = next_line_start(handle, nominal, size)
            if start < size:
                cuts.append(start)
    cuts.append(size)
    return list(itertools.pairwise(cuts))


def next_line_start(handle, position: int, size: int) -> int:
    """The first line start at or after `position` (> 0), or `size` if no line starts there.

    A line starts after `\\n`, and after a `\\r` that no `\\n` follows (the readers' rule).
    """
    handle.seek(position - 1)
    base = position - 1
    while buffer := handle.read(_SCAN_BYTES):
        found = [at for at in (buffer.find(b"\n"), buffer.find(b"\r")) if at >= 0]
        if not found:
            base += len(buffer)
            continue
        at = min(found)
        if buffer[at] == 0x0A:
            return base + at + 1
        after = buffer[at + 1 : at + 2] or handle.read(1)
        return base + at + (2 if after == b"\n" else 1)
    return size


def _row_group_pieces(path: str, split_bytes: int) -> list[dict]:
    """Runs of whole row groups of about `split_bytes` compressed bytes each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError):
        # Read whole, so that the reader reports the damage as it does for any build.
        return []
    pieces: list[dict] = []
    first = rows = size = row = 0
    for group in range(metadata.num_row_groups):
        info = metadata.row_group(group)
        if size and size + _compressed(info) > split_bytes:
            pieces.append(_rows_piece(first, group, row - rows, size))
            first, rows, size = group, 0, 0
        rows += info.num_rows
        row += info.num_rows
        size += _compressed(info)
    if metadata.num_row_groups:
        pieces.append(_rows_piece(first, metadata.num_row_groups, row - rows, size))
    return pieces


def _compressed(info) -> int:
    return sum(info.column(index).total_compressed_size for index in range(info.num_columns))


def _rows_piece(first: int, end: int, first_row: int, size: int) -> dict:
    return {
        "reader": "parquet",
        "kind": "rows",
        "start": first,
        "end": end,
        "first_row": first_row,
        "size": size,
    }


def fingerprint(units: list[Unit], split_bytes: int) -> str:
    """sha256 of the split: parts of one build must all have been made from the same one."""
    key = [split_bytes] + [
        [unit.path, unit.format, unit.reader, unit.kind, unit.start, unit.end] for unit in units
    ]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]


def count_breaks(data: bytes, after_cr: bool) -> int:
    """Line breaks (LF, CRLF, lone CR) in `data`; `after_cr`: the byte before `data` was a CR, so
    an LF at its start completes that CRLF and is not a break of its own."""
    breaks = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
    if after_cr and data[:1] == b"\n":
        breaks -= 1
    return breaks


def lines_before(unit: Unit) -> int:
    """Lines (or parquet rows) of the file before `unit`, counted from the file itself: for the
    rare report that needs them before the units ahead have told (an error, a node's part)."""
    if unit.kind == "rows":
        return unit.first_row
    if unit.kind != "bytes" or unit.start == 0:
        return 0
    breaks = 0
    after_cr = False
    with open(unit.open_path, "rb") as handle:
        left = unit.start
        while left > 0 and (data := handle.read(min(left, 4 << 20))):
            breaks += count_breaks(data, after_cr)
            after_cr = data[-1:] == b"\r"
            left -= len(data)
    return breaks
