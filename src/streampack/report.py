"""One report per run: every stage adds its counts here, and `report.json` is its dictionary.

Every record that is read is either used or counted here under one of `REASONS`, with its first
`file:line` locations: in `skipped` when it was not used, in `repaired` when it was used after a
repair (invalid bytes replaced, a document split). With `on_error="raise"` the first record
counted under a problem reason raises a `DataError` instead, so both modes share one code path in
the readers.
"""

import threading
from collections import defaultdict

import orjson

from .errors import DataError

# How many file:line locations are kept per skip reason: enough to find the problem, bounded memory.
MAX_LOCATIONS = 10
# Locations kept per file and reason, for `validate`'s per-file table.
MAX_FILE_LOCATIONS = 3

# reason -> (what is wrong, what was expected): the words of a `DataError` and of the README.
REASONS = {
    "empty_document": ("empty or whitespace-only document", "text with a visible character"),
    "invalid_json": ("malformed JSON", "one JSON object per line or one array of objects"),
    "not_an_object": ("record is not a JSON object", "an object"),
    "missing_text_field": ("no text field", "--text-field, 'text' or exactly one string field"),
    "non_string_text": ("text field is not a string", "a string"),
    "invalid_utf8": ("invalid UTF-8", "valid UTF-8, or --encoding for another encoding"),
    "invalid_encoding": ("bytes invalid in the chosen --encoding", "valid text"),
    "corrupt_compressed": ("truncated or corrupt compressed data", "a complete stream"),
    "document_too_large": ("document larger than --max-document-bytes", "a smaller document"),
    "document_split": ("document split at --max-document-bytes", "a smaller document"),
}
# Fields whose JSON types are tracked across files for `field_types`: a corpus whose records
# carry arbitrary keys (ids as keys) must not grow the report without bound.
MAX_TRACKED_FIELDS = 256


# Keys of a build's report.json that describe the run rather than the store: timings, memory,
# the batch size tuner's trials and the memory guard's steps, and `resumed`. Two builds of the
# same store may differ in these and nothing else.
RUN_KEYS = frozenset(
    {
        "seconds",
        "total_seconds",
        "tokens_per_second",
        "megabytes_per_second",
        "peak_rss_mb",
        "tokenizer_load_seconds",
        "backend_setup_seconds",
        "first_block_seconds",
        "batch_size",
        "batch_size_chosen_mb",
        "batch_size_tokens_per_second",
        "documents_per_batch",
        "backpressure_events",
        "resumed",
        "timeline",
    }
)


def problem_message(reason: str, where: str, found: str) -> str:
    """`where: what is wrong (expected ..., found ...)`, on one line."""
    what, expected = REASONS.get(reason, (reason.replace("_", " "), "a usable record"))
    found = " ".join(found.split()) or "otherwise"
    return f"{where}: {what} (expected {expected}, found {found})"


class _Counts:
    """Records under each reason: totals, first locations, and per file (for `validate`)."""

    def __init__(self) -> None:
        self.count: dict[str, int] = defaultdict(int)
        self.locations: dict[str, list[str]] = defaultdict(list)
        # path -> reason -> [count, first locations], for per-file tables.
        self.by_file: dict[str, dict[str, list]] = defaultdict(dict)

    def add(self, reason: str, path: str, where: str, count: int) -> None:
        self.count[reason] += count
        kept = self.locations[reason]
        if len(kept) < MAX_LOCATIONS:
            kept.append(where)
        per_file = self.by_file[path].setdefault(reason, [0, []])
        per_file[0] += count
        if len(per_file[1]) < MAX_FILE_LOCATIONS:
            per_file[1].append(where)

    def as_dict(self) -> dict:
        return {
            reason: {"count": count, "first": list(self.locations[reason])}
            for reason, count in sorted(self.count.items())
        }

    def of_file(self, path: str) -> dict:
        return {
            reason: {"count": count, "first": list(first)}
            for reason, (count, first) in sorted(self.by_file.get(path, {}).items())
        }

    def mark(self, current: str | None) -> dict:
        """The totals (bounded) and the entries of the file `current`, copied."""
        return _copy(
            {
                "count": self.count,
                "locations": self.locations,
                "current": self.by_file.get(current, {}),
            }
        )

    def state_at(self, mark: dict, earlier: list[str], current: str | None) -> dict:
        """The whole state at `mark`: the per-file entries of `earlier` files, which no longer
        change once the next file has started, are taken as they are now."""
        by_file = {path: self.by_file[path] for path in earlier if path in self.by_file}
        if mark["current"]:
            by_file[current] = mark["current"]
        return {**mark, "current": None, "by_file": _copy(by_file)}

    def load(self, state: dict) -> None:
        """Take `state` (from `state_at`) in place: the readers hold these dicts."""
        for mine, theirs in (
            (self.count, state["count"]),
            (self.locations, state["locations"]),
            (self.by_file, state["by_file"]),
        ):
            mine.clear()
            mine.update(theirs)


class Report:
    """Counts of a run. Thread-safe: readers run in their own thread.

    `on_error="raise"` turns the first problem `skip` into a `DataError`.
    """

    def __init__(self, on_error: str = "skip") -> None:
        self._lock = threading.Lock()
        self.on_error = on_error
        self._skipped = _Counts()
        self._repaired = _Counts()
        # The dicts of `skipped`, kept as attributes since readers and tests look at them.
        self.skipped = self._skipped.count
        self.locations = self._skipped.locations
        self.by_file = self._skipped.by_file
        self.repaired = self._repaired.count
        self.repaired_locations = self._repaired.locations
        self.files: dict[str, dict] = {}
        self.files_skipped: list[dict] = []
        self.values: dict = {}
        # Records counted under a problem reason (not tolerated blank lines, not repairs).
        self.problems = 0
        self.file_problems: dict[str, int] = defaultdict(int)
        # field -> JSON type -> records, over all files; see `add_field_types`.
        self._field_types: dict[str, dict[str, int]] = {}

    def skip(
        self,
        reason: str,
        path: str,
        line: int | None = None,
        count: int = 1,
        detail: str = "",
        found: str = "",
        fatal: bool = True,
    ):
        """Count `count` records not used, under `reason`, at `path:line`.

        `found` describes the bad value for a `DataError`; `fatal=False` marks a count that is not
        a problem (a blank line between the documents of a text file), so it never raises and
        `validate` does not call the file unclean for it.
        """
        where = path if line is None else f"{path}:{line}"
        if fatal and self.on_error == "raise":
            raise DataError(problem_message(reason, where, found or detail))
        if detail:
            where = f"{where}: {detail}"
        with self._lock:
            self._skipped.add(reason, path, where, count)
            if fatal:
                self.problems += count
                self.file_problems[path] += count

    def repair(
        self, reason: str, path: str, line: int | None = None, count: int = 1, detail: str = ""
    ) -> None:
        """Count `count` records that were used after a repair (bytes replaced by U+FFFD, a
        document split into `count` documents); never a problem, never raises."""
        where = path if line is None else f"{path}:{line}"
        if detail:
            where = f"{where}: {detail}"
        with self._lock:
            self._repaired.add(reason, path, where, count)

    def fail(self, reason: str, path: str, line: int | None = None, found: str = ""):
        """Raise the `DataError` of `reason` whatever `on_error` is (`--encoding-errors raise`)."""
        where = path if line is None else f"{path}:{line}"
        raise DataError(problem_message(reason, where, found))

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

    def add_field_types(self, fields: dict[str, dict[str, int]]) -> None:
        """Add one file's `{field: {JSON type: records}}`; at most `MAX_TRACKED_FIELDS` names."""
        with self._lock:
            tracked = self._field_types
            for name, types in fields.items():
                known = tracked.get(name)
                if known is None:
                    if len(tracked) >= MAX_TRACKED_FIELDS:
                        continue
                    known = tracked[name] = {}
                for kind, count in types.items():
                    known[kind] = known.get(kind, 0) + count

    def skipped_in(self, path: str) -> dict:
        """`{reason: {count, first}}` of the records of `path` that were not used."""
        with self._lock:
            return self._skipped.of_file(path)

    def repaired_in(self, path: str) -> dict:
        """`{reason: {count, first}}` of the records of `path` used after a repair."""
        with self._lock:
            return self._repaired.of_file(path)

    def mark(self) -> dict:
        """The reading state now, cheap enough to take after every batch (in the reader's
        thread): the counts, which are bounded, and the entry of the file being read. Files read
        before it no longer change, so `state_at` takes them later, when a shard is committed."""
        with self._lock:
            current = next(reversed(self.files), None)
            return {
                "files": len(self.files),
                "entry": _copy(self.files[current]) if current is not None else None,
                "files_skipped": len(self.files_skipped),
                "problems": self.problems,
                "file_problems": self.file_problems.get(current, 0),
                "field_types": _copy(self._field_types),
                "skipped": self._skipped.mark(current),
                "repaired": self._repaired.mark(current),
            }

    def state_at(self, mark: dict) -> dict:
        """The full reading state at `mark` (from `mark`), as plain JSON values, for resuming a
        run at the batch the mark was taken after."""
        with self._lock:
            paths = list(self.files)[: mark["files"]]
            earlier, current = paths[:-1], paths[-1] if paths else None
            files = [_copy(self.files[path]) for path in earlier]
            if mark["entry"] is not None:
                files.append(mark["entry"])
            problems = {path: self.file_problems.get(path, 0) for path in earlier}
            if mark["file_problems"]:
                problems[current] = mark["file_problems"]
            return {
                "files": files,
                "files_skipped": _copy(self.files_skipped[: mark["files_skipped"]]),
                "problems": mark["problems"],
                "file_problems": {path: count for path, count in problems.items() if count},
                "field_types": mark["field_types"],
                "skipped": self._skipped.state_at(mark["skipped"], earlier, current),
                "repaired": self._repaired.state_at(mark["repaired"], earlier, current),
            }

    def load_state(self, state: dict) -> None:
        """Continue from `state` (from `state_at`), in place.

        A resumed run reads its current file again from the start up to the batch the state was
        taken after, then loads the state: that file's entry already holds the same values, and
        the reader keeps the same dict (updated key by key, never replaced).
        """
        with self._lock:
            live = dict(self.files)
            self.files.clear()
            for saved in state["files"]:
                entry = live.get(saved["path"])
                if entry is None:
                    entry = saved
                else:
                    for key in [key for key in entry if key not in saved]:
                        del entry[key]
                    for key, value in saved.items():
                        if entry.get(key) != value:
                            entry[key] = value
                self.files[saved["path"]] = entry
            self.files_skipped[:] = state["files_skipped"]
            self.problems = state["problems"]
            self.file_problems.clear()
            self.file_problems.update(state["file_problems"])
            self._field_types.clear()
            self._field_types.update(state["field_types"])
            self._skipped.load(state["skipped"])
            self._repaired.load(state["repaired"])

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict:
        with self._lock:
            out = {
                **self.values,
                "skipped": self._skipped.as_dict(),
                "repaired": self._repaired.as_dict(),
                "files": list(self.files.values()),
                "files_skipped": list(self.files_skipped),
            }
            # Null aside (a null text field is counted as non_string_text already), a field seen
            # with two types is worth a look; the key is there only when that happened.
            changed = {
                name: dict(sorted(types.items()))
                for name, types in sorted(self._field_types.items())
                if len(set(types) - {"null"}) > 1
            }
            if changed:
                out["field_types"] = changed
            return out


def _copy(value):
    """A deep copy of plain JSON values; orjson does it several times faster than `deepcopy`."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


def nothing_used(sources, report: dict, made: str) -> str:
    """The one-line error of a run that made no `made` (documents, samples) from `sources`."""
    skipped = report["skipped"]
    if skipped:
        counts = ", ".join(f"{reason} {entry['count']}" for reason, entry in skipped.items())
        first = next(iter(skipped.values()))["first"][:1]
        why = f"every record was skipped ({counts}); first at {first[0] if first else '?'}"
    elif report.get("files_skipped"):
        passed = report["files_skipped"]
        names = ", ".join(f"{entry['path']} ({entry['reason']})" for entry in passed[:3])
        more = f" and {len(passed) - 3} more" if len(passed) > 3 else ""
        why = f"no file could be read: skipped {names}{more}"
    else:
        why = "the sources hold no records"
    return f"no {made} made from {', '.join(map(str, sources))}: {why}"
