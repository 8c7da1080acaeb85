"""Follow mode: watch the source folders and hand out each file once it is complete.

A file is complete when its name is not a temporary one (`*.tmp`, `*.partial`, `*.part`, or a
name starting with `.`) and its size and modification time have stayed the same for `settle`
seconds. Files are handed out in the order they were first seen, by name among those seen in
the same scan. A file is consumed once, by path: the state (path, size, modification time of
every consumed file) is saved in a JSON file after each one, so that a restart consumes only
what is new; a consumed file that changes afterwards is reported once and not read again.
"""

import glob
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import SourceError
from ..report import Report
from .discovery import SourceFile, _inspect, format_of

log = logging.getLogger(__name__)

TEMPORARY_SUFFIXES = (".tmp", ".partial", ".part")
STATE_FORMAT = "streampack-follow"
STATE_VERSION = 1


def is_temporary(name: str) -> bool:
    return name.startswith(".") or name.endswith(TEMPORARY_SUFFIXES)


class FollowState:
    """The consumed files, `{path: {"size": bytes, "mtime_ns": ns}}`, kept in `path` (None:
    in memory only)."""

    def __init__(self, path=None) -> None:
        self.path = None if path is None else Path(path)
        self.files: dict[str, dict] = {}
        if self.path is not None and self.path.is_file():
            try:
                saved = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError as error:
                raise SourceError(f"{self.path}: not a follow state file ({error})") from None
            if saved.get("format") != STATE_FORMAT:
                raise SourceError(
                    f"{self.path}: not a follow state file (format {saved.get('format')!r}); "
                    f"pass another follow_state path"
                )
            self.files = {entry["path"]: entry for entry in saved["files"]}

    def add(self, path: str, size: int, mtime_ns: int) -> None:
        self.files[path] = {"path": path, "size": size, "mtime_ns": mtime_ns}
        if self.path is not None:
            from ..store.atomic import write_atomic

            body = {"format": STATE_FORMAT, "version": STATE_VERSION}
            body["files"] = list(self.files.values())
            write_atomic(self.path, (json.dumps(body, indent=1) + "\n").encode("utf-8"))


class Watcher:
    """Polls `sources` (folders, files, globs) every `poll` seconds; `files()` yields each
    complete file not in `state` as a `SourceFile`, until `stop()`."""

    def __init__(
        self,
        sources: Sequence[str],
        state: FollowState,
        settle: float = 2.0,
        poll: float = 0.5,
        format: str | None = None,
    ) -> None:
        self.sources = [os.fspath(source) for source in sources]
        self.state = state
        self.settle = settle
        self.poll = poll
        self.format = format
        self._stop = threading.Event()
        # path -> [first seen, size, mtime_ns, unchanged since]
        self._seen: dict[str, list] = {}
        self._handed: set[str] = set()
        self._warned: set[str] = set()
        self._scans = 0

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _candidates(self) -> list[str]:
        found = []
        for source in self.sources:
            if os.path.isdir(source):
                for root, dirs, names in os.walk(source):
                    dirs[:] = sorted(name for name in dirs if not name.startswith("."))
                    if "metadata.json" in names and any(n.startswith("shard-") for n in names):
                        dirs[:] = []  # a token store written inside the folder is output
                        continue
                    found += [os.path.join(root, name) for name in names]
            elif any(char in source for char in "*?["):
                found += [
                    path for path in glob.glob(source, recursive=True) if os.path.isfile(path)
                ]
            elif os.path.isfile(source):
                found.append(source)
        return [
            path
            for path in found
            if not is_temporary(os.path.basename(path))
            and (self.format is not None or format_of(path) is not None)
        ]

    def _ready(self) -> list[str]:
        """The complete files not handed out yet, in the order they were first seen."""
        now = time.monotonic()
        self._scans += 1
        ready = []
        for path in self._candidates():
            if path in self._handed:
                continue
            try:
                info = os.stat(path)
            except OSError:
                continue
            done = self.state.files.get(path)
            if done is not None:
                # A store's metadata keeps sizes only (mtime_ns None).
                changed = done["size"] != info.st_size or done["mtime_ns"] not in (
                    None,
                    info.st_mtime_ns,
                )
                if changed and path not in self._warned:
                    self._warned.add(path)
                    log.warning("%s: changed after it was consumed; not read again", path)
                continue
            seen = self._seen.get(path)
            identity = (info.st_size, info.st_mtime_ns)
            if seen is None:
                self._seen[path] = [(self._scans, path), *identity, now]
                seen = self._seen[path]
            elif (seen[1], seen[2]) != identity:
                seen[1:] = [*identity, now]
            if now - seen[3] >= self.settle:
                ready.append(path)
        return sorted(ready, key=lambda path: self._seen[path][0])

    def files(self) -> Iterator[SourceFile]:
        report = Report("skip")
        while not self._stop.is_set():
            ready = self._ready()
            for path in ready:
                found = _inspect(path, self.format, report)
                self._handed.add(path)
                if found is not None:
                    yield found
                if self._stop.is_set():
                    return
            if not ready:
                self._stop.wait(self.poll)

    def wait_ready(self) -> list[SourceFile]:
        """The complete files not handed out yet, as soon as there is one; [] after `stop()`."""
        report = Report("skip")
        while not self._stop.is_set():
            ready = []
            for path in self._ready():
                self._handed.add(path)
                found = _inspect(path, self.format, report)
                if found is not None:
                    ready.append(found)
            if ready:
                return ready
            self._stop.wait(self.poll)
        return []

    def consumed(self, path: str) -> None:
        """Every document of `path` has been packed: record it in the state."""
        seen = self._seen.get(path)
        if seen is not None:
            self.state.add(path, seen[1], seen[2])
