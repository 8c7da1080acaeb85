"""The task split: cuts at line starts, every line in exactly one unit, row groups, whole files."""

import io
import itertools

import pytest

from streampack.config import ReadConfig
from streampack.errors import ConfigError
from streampack.report import Report
from streampack.scale.split import next_line_start, plan_split
from streampack.scale.unit import RangeStream
from streampack.sources import discover


def _units(paths, split_bytes, **read):
    files = discover([str(p) for p in paths], Report())
    return plan_split(files, ReadConfig(**read), split_bytes)


@pytest.mark.parametrize(
    ("data", "position", "expected"),
    [
        (b"ab\ncd\nef", 1, 3),  # inside a line: the next one
        (b"ab\ncd\nef", 3, 3),  # right after a break: here
        (b"ab\r\ncd", 3, 4),  # between CR and LF: after the LF
        (b"ab\rcd", 3, 3),  # after a lone CR: here
        (b"ab\rcd", 2, 3),  # on a lone CR: after it
        (b"abcdef", 2, 6),  # no break ahead: the end
        (b"ab\r", 1, 3),  # a CR as the last byte
    ],
)
def test_next_line_start(data, position, expected):
    assert next_line_start(io.BytesIO(data), position, len(data)) == expected


def test_ranges_cover_every_byte_at_line_starts(corpus):
    units = _units([corpus / "notes.txt"], 4096)
    data = (corpus / "notes.txt").read_bytes()
    ranges = [(u.start, u.end) for u in units]
    assert len(units) > 5 and all(u.kind == "bytes" for u in units)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    for start, _ in ranges[1:]:
        before = data[start - 1 : start]
        assert before == b"\n" or (before == b"\r" and data[start : start + 1] != b"\n")


def test_range_stream_reads_its_bytes_and_counts_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"one\r\ntwo\rthree\nfour\n")
    stream = RangeStream(str(path), 5, 20)
    assert stream.read(4) + stream.read(-1) == b"two\rthree\nfour\n"
    assert stream.breaks == 3 and stream.position == 15
    stream.close()


def test_split_kinds(corpus, tmp_path):
    units = _units([corpus], 4096)
    kinds = {}
    for unit in units:
        kinds.setdefault(unit.path.rsplit("/", 1)[-1], set()).add(unit.kind)
    # A compressed file cannot be cut without reading it all: it is one unit.
    assert kinds == {
        "more.txt.gz": {"file"},
        "notes.txt": {"bytes"},
        "records.jsonl": {"bytes"},
        "table.parquet": {"rows"},
    }
    assert [u.index for u in units] == list(range(len(units)))
    groups = [(u.start, u.end) for u in units if u.kind == "rows"]
    assert groups[0][0] == 0 and groups[-1][1] == 10
    rows = [u.first_row for u in units if u.kind == "rows"]
    assert rows == [start * 60 for start, _ in groups]
    # Paragraphs could be cut, and a JSON array has no lines: those files are read whole.
    assert {u.kind for u in _units([corpus / "notes.txt"], 4096, doc_mode="paragraph")} == {"file"}
    array = tmp_path / "array.json"
    array.write_text("[" + ",".join(f'{{"text": "{i}"}}' for i in range(3000)) + "]")
    assert [u.kind for u in _units([array], 4096)] == ["file"]
    lines = tmp_path / "lines.json"
    lines.write_text("".join(f'{{"text": "{i}"}}\n' for i in range(3000)))
    assert {(u.kind, u.reader) for u in _units([lines], 4096)} == {("bytes", "jsonl")}


def test_split_is_deterministic_and_refuses_tiny_units(corpus):
    assert _units([corpus], 8192) == _units([corpus], 8192)
    with pytest.raises(ConfigError, match="split_bytes must be at least 4096"):
        _units([corpus], 100)
