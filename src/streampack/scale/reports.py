"""The counts of many units made into one report, with every location a real line of its file.

A unit that starts inside a file numbers its lines from 1, since it does not know how many lines
come before it; the driver learns that from the units ahead (each counts its own) and shifts the
locations when the reports are joined, so `file:line` in the store's report is the line in the
file, as from a build on one machine.
"""

import re

from ..report import MAX_LOCATIONS, Report

_LINE = re.compile(r"\d+")
# Byte offsets in the readers' details and messages, counted from the start of what they read.
_OFFSET = re.compile(r"((?:byte|bad byte at) offset )(\d+)")


def unit_state(report: Report) -> dict:
    """What a unit's report holds, as plain data that pickles and goes into JSON."""
    data = report.as_dict()
    return {
        "skipped": data["skipped"],
        "repaired": data["repaired"],
        "files": data["files"],
        # Summed across units before deciding which fields changed type (`Report.as_dict`).
        "field_types": {name: dict(kinds) for name, kinds in report._field_types.items()},
    }


def shift_location(where: str, path: str, lines: int, offset: int = 0) -> str:
    """`path:N...` becomes `path:N+lines...`, and a byte offset in it moves on by `offset`; other
    locations stay as they are."""
    if not where.startswith(path + ":"):
        return where
    rest = where[len(path) + 1 :]
    match = _LINE.match(rest)
    if match is None:
        return where
    rest = rest[match.end() :]
    if offset:
        rest = _OFFSET.sub(lambda m: f"{m.group(1)}{int(m.group(2)) + offset}", rest)
    return f"{path}:{int(match.group()) + lines}{rest}"


def join_states(states: list[tuple[dict, str, int, int]]) -> dict:
    """One report's count sections from `(state, path, lines before the unit, its first byte)`,
    in unit order.

    Counts add up; the first locations are the first `MAX_LOCATIONS` in unit order, as a single
    pass over the files would have kept them.
    """
    sections = {"skipped": {}, "repaired": {}}
    files: dict[str, dict] = {}
    field_types: dict[str, dict[str, int]] = {}
    for state, path, lines, offset in states:
        for section, joined in sections.items():
            for reason, entry in state[section].items():
                into = joined.setdefault(reason, {"count": 0, "first": []})
                into["count"] += entry["count"]
                room = MAX_LOCATIONS - len(into["first"])
                into["first"] += [
                    shift_location(w, path, lines, offset) for w in entry["first"][:room]
                ]
        for entry in state["files"]:
            known = files.get(entry["path"])
            if known is None:
                files[entry["path"]] = dict(entry)
            else:
                known["documents"] += entry["documents"]
                known["bytes"] += entry["bytes"]
        for name, kinds in state["field_types"].items():
            into = field_types.setdefault(name, {})
            for kind, count in kinds.items():
                into[kind] = into.get(kind, 0) + count
    joined = {
        "skipped": dict(sorted(sections["skipped"].items())),
        "repaired": dict(sorted(sections["repaired"].items())),
        "files": list(files.values()),
    }
    changed = {
        name: dict(sorted(kinds.items()))
        for name, kinds in sorted(field_types.items())
        if len(set(kinds) - {"null"}) > 1
    }
    if changed:
        joined["field_types"] = changed
    return joined
