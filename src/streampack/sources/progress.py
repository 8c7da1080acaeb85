"""Per-file bookkeeping shared by the format readers: batches, report entry, bulk skip counts."""

from collections.abc import Sequence

import numpy as np

from ..records import RecordBatch
from ..report import MAX_LOCATIONS, Report


def count_lines(count, kept: dict, reason: str, path: str, lines, details=None, **options):
    """Count one record per entry of `lines` through `count` (`report.skip` or `report.repair`)
    without one locked call per record.

    Blank lines can be half of a text corpus; the report keeps only the first few locations (in
    `kept`), so only those get their own call and the rest go in as one count. `details[i]` is
    the detail of `lines[i]`.
    """
    if not len(lines):
        return
    room = max(0, MAX_LOCATIONS - len(kept.get(reason, ())))
    for index, line in enumerate(lines[:room]):
        count(reason, path, int(line), detail=details[index] if details else "", **options)
    rest = len(lines) - room
    if rest > 0:
        detail = details[room] if details else ""
        count(reason, path, int(lines[room]), count=rest, detail=detail, **options)


def skip_lines(
    report: Report, reason: str, path: str, lines: Sequence[int], fatal: bool = True
) -> None:
    """Count the records at `lines` of `path` as not used, under `reason`."""
    count_lines(report.skip, report.locations, reason, path, lines, fatal=fatal)


class FileProgress:
    """Turns the documents of one file into batches and keeps its report entry current."""

    def __init__(self, report: Report, path: str, entry: dict, stream=None) -> None:
        self.report = report
        self.path = path
        self.entry = entry
        self.stream = stream
        self._position = 0

    def batch(
        self, texts: list[str], lines: Sequence[int] | np.ndarray, nbytes: int | None = None
    ) -> RecordBatch:
        """Wrap `texts` (started at 1-based `lines`); `nbytes` defaults to raw bytes read since
        the previous batch of this file."""
        if nbytes is None:
            position = self.stream.position
            nbytes = position - self._position
            self._position = position
            self.entry["bytes"] = position
        else:
            self.entry["bytes"] += nbytes
        self.entry["documents"] += len(texts)
        if not isinstance(lines, np.ndarray) or lines.dtype != np.int64:
            lines = np.asarray(lines, dtype=np.int64)
        return RecordBatch(self.path, texts, lines, nbytes)

    def finish(self) -> None:
        """Record the raw bytes read after the last batch (end-of-file checks, trailing blanks)."""
        if self.stream is not None:
            self.entry["bytes"] = self.stream.position

    def corrupt(self, line: int, error: Exception) -> None:
        """The compressed data broke before `line`: what was read stays, the rest counts once."""
        self.report.skip(
            "corrupt_compressed",
            self.path,
            line,
            detail=f"after {self.entry['documents']} records: {error}",
            found=f"{error}, after {self.entry['documents']} records",
        )
