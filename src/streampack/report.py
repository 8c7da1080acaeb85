"""One report per run: every stage adds its counts here, and `report.json` is its dictionary."""

import threading
from collections import defaultdict

# How many file:line locations are kept per skip reason: enough to find the problem, bounded memory.
MAX_LOCATIONS = 10


class Report:
    """Counts of a run. Thread-safe: readers run in their own thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.skipped: dict[str, int] = defaultdict(int)
        self.locations: dict[str, list[str]] = defaultdict(list)
        self.files: dict[str, dict] = {}
        self.files_skipped: list[dict] = []
        self.values: dict = {}

    def skip(
        self, reason: str, path: str, line: int | None = None, count: int = 1, detail: str = ""
    ):
        """Count `count` records not used, under `reason`, at `path:line`."""
        where = path if line is None else f"{path}:{line}"
        if detail:
            where = f"{where}: {detail}"
        with self._lock:
            self.skipped[reason] += count
            kept = self.locations[reason]
            if len(kept) < MAX_LOCATIONS:
                kept.append(where)

    def add_file(self, path: str, **info) -> dict:
        """Start the entry of one source file; readers update the returned dict in place."""
        with self._lock:
            entry = self.files.setdefault(path, {"path": path, "documents": 0, "bytes": 0})
            entry.update(info)
            return entry

    def skip_file(self, path: str, reason: str) -> None:
        """A discovered file that was not read at all (unknown format, hidden, ...)."""
        with self._lock:
            self.files_skipped.append({"path": path, "reason": reason})

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict:
        with self._lock:
            skipped = {
                reason: {"count": count, "first": list(self.locations[reason])}
                for reason, count in sorted(self.skipped.items())
            }
            return {
                **self.values,
                "skipped": skipped,
                "files": list(self.files.values()),
                "files_skipped": list(self.files_skipped),
            }
