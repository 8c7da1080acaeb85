"""`validate`: read sources as `pack` would, without tokenizing, and describe each file.

It goes through the same readers (`sources.read_batches`), so what it reports is exactly what a
run would count, at reading speed and in the readers' bounded memory.
"""

import logging
import os
from collections.abc import Iterable

import numpy as np

from .config import ReadConfig
from .report import Report
from .sources import discover, read_batches, source_names

log = logging.getLogger(__name__)

# Document lengths kept per file for the median and p95: exact below this many documents, else
# every k-th document (k doubling as the file grows), so memory stays bounded on any corpus.
LENGTH_SAMPLE = 1 << 16
# Files skipped at discovery that mean a problem; hidden files are skipped by design.
PROBLEM_FILES = frozenset({"unknown_format", "unreadable"})


class _Lengths:
    """Exact count, min and max; median and p95 from a strided sample of bounded size."""

    def __init__(self) -> None:
        self.count = 0
        self.min: int | None = None
        self.max: int | None = None
        self._sample: list[np.ndarray] = []
        self._kept = 0
        self._stride = 1

    def add(self, lengths: np.ndarray) -> None:
        if not len(lengths):
            return
        low, high = int(lengths.min()), int(lengths.max())
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)
        # Keep the documents whose running index is a multiple of the stride.
        first = (-self.count) % self._stride
        self.count += len(lengths)
        kept = lengths[first :: self._stride]
        self._sample.append(kept)
        self._kept += len(kept)
        if self._kept >= 2 * LENGTH_SAMPLE:
            joined = np.concatenate(self._sample)[::2]
            self._sample, self._kept, self._stride = [joined], len(joined), self._stride * 2

    def as_dict(self) -> dict:
        if not self.count:
            return {"min": None, "median": None, "p95": None, "max": None}
        sample = np.concatenate(self._sample)
        return {
            "min": self.min,
            "median": int(np.median(sample)),
            "p95": int(np.percentile(sample, 95, method="nearest")),
            "max": self.max,
        }


def _type_changes(fields: dict[str, dict[str, int]]) -> list[str]:
    """Fields seen with more than one type (null aside) within one file."""
    return sorted(name for name, types in fields.items() if len(set(types) - {"null"}) > 1)


def _across_files(entries: list[dict]) -> dict:
    """Fields missing from some files and fields whose types differ from file to file."""
    with_fields = [entry for entry in entries if entry.get("fields") is not None]
    if len(with_fields) < 2:
        return {"missing_in": {}, "types_differ": {}}
    names = sorted({name for entry in with_fields for name in entry["fields"]})
    missing_in = {}
    types_differ = {}
    for name in names:
        absent = [entry["path"] for entry in with_fields if name not in entry["fields"]]
        if absent:
            missing_in[name] = absent
        kinds = {
            entry["path"]: sorted(set(entry["fields"][name]) - {"null"})
            for entry in with_fields
            if name in entry["fields"]
        }
        if len({tuple(kind) for kind in kinds.values()}) > 1:
            types_differ[name] = kinds
    return {"missing_in": missing_in, "types_differ": types_differ}


def validate(
    sources: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    doc_mode: str = "line",
    text_field: str | None = None,
    format: str | None = None,
    on_error: str = "skip",
    encoding: str = "utf-8",
    encoding_errors: str = "replace",
) -> dict:
    """Read `sources` without tokenizing; returns `{"ok", "files", "skipped", "repaired", ...}`.

    `ok` is False when a record was counted as a problem or a file could not be read. With
    `on_error="raise"` the first problem raises a `DataError` instead.

    >>> result = streampack.validate("corpus/")
    >>> result["ok"], result["files"][0]["bad"]
    """
    names = source_names(sources)
    config = ReadConfig(
        doc_mode=doc_mode,
        text_field=text_field,
        format=format,
        on_error=on_error,
        encoding=encoding,
        encoding_errors=encoding_errors,
        collect_fields=True,
    )
    report = Report(on_error)
    files = discover(names, report, config.format)
    lengths: dict[str, _Lengths] = {file.path: _Lengths() for file in files}
    for batch in read_batches(files, config, report):
        lengths[batch.path].add(np.fromiter(map(len, batch.texts), np.int64, len(batch.texts)))
    entries = []
    for file in files:
        entry = report.files.get(file.path, {"path": file.path, "documents": 0})
        fields = entry.get("fields")
        entries.append(
            {
                "path": file.path,
                "format": entry.get("format", file.format),
                "codec": entry.get("codec", file.codec),
                "bytes": file.size,
                "records": entry["documents"] + report.file_problems.get(file.path, 0),
                "documents": entry["documents"],
                "problems": report.file_problems.get(file.path, 0),
                # Records not used, and records used after a repair (replaced bytes, splits).
                "bad": report.skipped_in(file.path),
                "repaired": report.repaired_in(file.path),
                "fields": fields,
                "type_changes": _type_changes(fields) if fields else [],
                "length_chars": lengths[file.path].as_dict(),
            }
        )
    bad_files = [entry for entry in report.files_skipped if entry["reason"] in PROBLEM_FILES]
    log.info("validated %d files: %d problem records", len(files), report.problems)
    summary = report.as_dict()
    return {
        "ok": not report.problems and not bad_files,
        "sources": names,
        "problems": report.problems,
        "files": entries,
        "skipped": summary["skipped"],
        "repaired": summary["repaired"],
        "files_skipped": list(report.files_skipped),
        "fields_across_files": _across_files(entries),
    }
