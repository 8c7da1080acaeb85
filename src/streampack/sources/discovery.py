"""Finding source files: paths, folders and globs become an ordered list of typed files."""

import glob
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..config import FORMATS
from ..errors import SourceError
from ..report import Report
from .compression import MAGIC_BYTES, codec_of

logger = logging.getLogger(__name__)

# Name suffixes of compressed files; the codec itself is taken from the magic bytes.
COMPRESSION_SUFFIXES = (".gz", ".zst", ".zstd", ".bz2", ".xz")
EXTENSIONS = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
}
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file to read.

    Attributes:
        path: the path as discovered (relative if the source was relative).
        format: one of `config.FORMATS`.
        codec: "none", "gzip", "zstd", "bz2" or "xz", from the file's first bytes.
        size: bytes on disk.
    """

    path: str
    format: str
    codec: str
    size: int


def format_of(path: str) -> str | None:
    """The format implied by the name, compression suffix removed; None if unknown."""
    name = os.path.basename(path).lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return EXTENSIONS.get(os.path.splitext(name)[1])


def _is_glob(source: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(source)


def _is_token_store(names: list[str]) -> bool:
    """A folder holding streampack shards, whole or partial."""
    return any(
        name.startswith("shard-") and name.endswith((".tokens", ".tokens.partial"))
        for name in names
    )


def _walk(folder: str, report: Report) -> list[str]:
    """Files under `folder`, sorted by path; hidden files and folders are reported, not entered."""
    found = []

    def unreadable(error: OSError) -> None:
        report.skip_file(error.filename or folder, "unreadable")

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        if _is_token_store(files):
            # A store written inside the corpus (`-o corpus/store`) is output, never input.
            report.skip_file(root, "token_store")
            dirs[:] = []
            continue
        for name in sorted(dirs):
            if name.startswith("."):
                report.skip_file(os.path.join(root, name), "hidden")
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in files:
            path = os.path.join(root, name)
            if name.startswith("."):
                report.skip_file(path, "hidden")
            else:
                found.append(path)
    return sorted(found)


def _expand(source: str, report: Report) -> list[str]:
    """The candidate files of one source: itself, its folder's files, or its glob's matches."""
    if os.path.isdir(source):
        return _walk(source, report)
    if os.path.lexists(source):
        return [source]
    if _is_glob(source):
        matches = sorted(glob.glob(source, recursive=True))
        if not matches:
            raise SourceError(
                f"glob matched no files: {source}; check the pattern and the folder it starts in"
            )
        files = []
        for match in matches:
            files.extend(_walk(match, report) if os.path.isdir(match) else [match])
        return sorted(files)
    raise SourceError(f"no such file or folder: {source}")


def _inspect(path: str, forced: str | None, report: Report) -> SourceFile | None:
    fmt = forced or format_of(path)
    if fmt is None:
        report.skip_file(path, "unknown_format")
        logger.debug("%s: unknown extension, skipped", path)
        return None
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            # A FIFO or device would block or never end; only regular files are sources.
            report.skip_file(path, "unreadable")
            return None
        with open(path, "rb") as handle:
            head = handle.read(MAGIC_BYTES)
    except OSError as err:
        logger.debug("%s: cannot be read: %s", path, err)
        report.skip_file(path, "unreadable")
        return None
    # pyarrow reads parquet by seeking to its footer, so a parquet file is never wrapped.
    codec = "none" if fmt == "parquet" else codec_of(head)
    return SourceFile(path=path, format=fmt, codec=codec, size=info.st_size)


def source_names(sources) -> list[str]:
    """What a caller gave as sources, as a list of strings: one path or many."""
    if isinstance(sources, str | os.PathLike) or not isinstance(sources, Iterable):
        sources = [sources]
    return [os.fspath(s) if isinstance(s, str | os.PathLike) else str(s) for s in sources]


def discover(
    sources: Sequence[str | os.PathLike], report: Report, format: str | None = None
) -> list[SourceFile]:
    """The files of `sources` (files, folders walked recursively, globs with `**`), in order.

    Sources keep the order given; the files of one folder or glob are sorted by path; a file
    reached twice is kept at its first place. `format` reads every file as that format.
    """
    if format is not None and format not in FORMATS:
        raise SourceError(f"format must be one of {', '.join(FORMATS)}, found {format!r}")
    names = [os.fspath(source) for source in sources]
    if not names:
        raise SourceError("no sources given: name at least one file, folder or glob")
    skipped_before = len(report.files_skipped)
    seen: set[str] = set()
    files: list[SourceFile] = []
    for source in names:
        candidates = _expand(source, report)
        for path in candidates:
            key = os.path.realpath(path)
            if key in seen:
                continue
            seen.add(key)
            found = _inspect(path, format, report)
            if found is not None:
                files.append(found)
    skipped = report.files_skipped[skipped_before:]
    if not files:
        reasons = Counter(entry["reason"] for entry in skipped)
        what = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        raise SourceError(
            f"no readable files in {', '.join(names)}"
            + (f"; skipped {len(skipped)} ({what})" if skipped else "; the folders are empty")
            + (
                "; pass --format (format= in Python) to read files with other extensions"
                if reasons.get("unknown_format")
                else ""
            )
        )
    total = sum(file.size for file in files)
    logger.info(
        "found %d source files (%.1f MB) in %d sources; %d skipped",
        len(files),
        total / 1e6,
        len(names),
        len(skipped),
    )
    return files
