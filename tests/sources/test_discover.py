"""Discovery: order, folders, globs, duplicates, hidden and unknown files, errors."""

import gzip
import os

import pytest

from streampack.errors import SourceError
from streampack.report import Report
from streampack.sources import SourceFile, discover, discovery


def touch(root, relative: str, data: bytes = b"x\n"):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(files: list[SourceFile], root) -> list[str]:
    return [os.path.relpath(f.path, root) for f in files]


def test_sources_keep_their_order_and_folders_are_sorted(tmp_path):
    touch(tmp_path, "b/z.txt")
    touch(tmp_path, "b/a.jsonl")
    touch(tmp_path, "b/sub/m.csv")
    touch(tmp_path, "a/only.tsv")
    single = touch(tmp_path, "single.md")
    report = Report()
    files = discover([tmp_path / "b", single, str(tmp_path / "a")], report)
    assert names(files, tmp_path) == [
        "b/a.jsonl",
        "b/sub/m.csv",
        "b/z.txt",
        "single.md",
        "a/only.tsv",
    ]
    assert [f.format for f in files] == ["jsonl", "csv", "text", "text", "tsv"]
    assert all(isinstance(f.path, str) for f in files)
    assert files[0].size == 2 and files[0].codec == "none"


def test_a_file_reached_twice_is_kept_once(tmp_path):
    first = touch(tmp_path, "d/1.txt")
    touch(tmp_path, "d/2.txt")
    report = Report()
    files = discover([first, tmp_path / "d", str(tmp_path / "d" / "*.txt")], report)
    assert names(files, tmp_path) == ["d/1.txt", "d/2.txt"]


def test_globs_including_recursive(tmp_path):
    touch(tmp_path, "data/x/2.jsonl")
    touch(tmp_path, "data/1.jsonl")
    touch(tmp_path, "data/x/y/3.jsonl")
    touch(tmp_path, "data/x/skip.txt")
    report = Report()
    files = discover([str(tmp_path / "data" / "**" / "*.jsonl")], report)
    assert names(files, tmp_path) == ["data/1.jsonl", "data/x/2.jsonl", "data/x/y/3.jsonl"]
    files = discover([str(tmp_path / "data" / "?.jsonl"), str(tmp_path / "data/x/[0-9].*")], report)
    assert names(files, tmp_path) == ["data/1.jsonl", "data/x/2.jsonl"]


def test_glob_matching_a_folder_walks_it(tmp_path):
    touch(tmp_path, "parts/p1/a.txt")
    touch(tmp_path, "parts/p2/b.txt")
    files = discover([str(tmp_path / "parts" / "p*")], Report())
    assert names(files, tmp_path) == ["parts/p1/a.txt", "parts/p2/b.txt"]


def test_hidden_files_and_folders_inside_folders_are_skipped(tmp_path):
    touch(tmp_path, "d/.secret.txt")
    touch(tmp_path, "d/.git/HEAD.txt")
    touch(tmp_path, "d/seen.txt")
    explicit = touch(tmp_path, "d2/.named.txt")
    report = Report()
    files = discover([tmp_path / "d", explicit], report)
    assert names(files, tmp_path) == ["d/seen.txt", "d2/.named.txt"]
    skipped = {(os.path.relpath(s["path"], tmp_path), s["reason"]) for s in report.files_skipped}
    assert skipped == {("d/.git", "hidden"), ("d/.secret.txt", "hidden")}


def test_unknown_extensions_are_skipped_not_fatal(tmp_path):
    touch(tmp_path, "d/notes.docx")
    touch(tmp_path, "d/data.txt")
    odd = touch(tmp_path, "named.bin")
    report = Report()
    files = discover([tmp_path / "d", odd], report)
    assert names(files, tmp_path) == ["d/data.txt"]
    assert sorted((os.path.basename(s["path"]), s["reason"]) for s in report.files_skipped) == [
        ("named.bin", "unknown_format"),
        ("notes.docx", "unknown_format"),
    ]


def test_format_option_applies_to_every_file(tmp_path):
    touch(tmp_path, "d/a.bin")
    touch(tmp_path, "d/b.txt")
    files = discover([tmp_path / "d"], Report(), format="jsonl")
    assert [(os.path.basename(f.path), f.format) for f in files] == [
        ("a.bin", "jsonl"),
        ("b.txt", "jsonl"),
    ]
    with pytest.raises(SourceError, match="format must be one of"):
        discover([tmp_path / "d"], Report(), format="xml")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.text", "text"),
        ("a.MD", "text"),
        ("a.ndjson.zst", "jsonl"),
        ("a.jsonl.zstd", "jsonl"),
        ("a.json.xz", "json"),
        ("a.pq", "parquet"),
        ("a.csv.bz2", "csv"),
        ("a.tsv.gz", "tsv"),
    ],
)
def test_format_by_extension_after_compression_suffix(tmp_path, name, fmt):
    path = touch(tmp_path, name)
    [found] = discover([path], Report())
    assert found.format == fmt


def test_compressed_names_without_a_format_are_unknown(tmp_path):
    touch(tmp_path, "d/archive.gz", gzip.compress(b"x"))
    touch(tmp_path, "d/ok.txt.gz", gzip.compress(b"x"))
    report = Report()
    [found] = discover([tmp_path / "d"], report)
    assert (os.path.basename(found.path), found.codec) == ("ok.txt.gz", "gzip")
    assert [s["reason"] for s in report.files_skipped] == ["unknown_format"]


def test_parquet_is_never_wrapped(tmp_path):
    # A parquet file whose first bytes happen to look like gzip is still read by pyarrow.
    path = touch(tmp_path, "a.parquet", b"\x1f\x8b rest")
    [found] = discover([path], Report())
    assert found.codec == "none"


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    locked = touch(tmp_path, "d/locked.txt")
    touch(tmp_path, "d/open.txt")
    real_open = open

    def deny(path, *args, **kwargs):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    # The module's global `open` shadows the builtin; this works even when tests run as root.
    monkeypatch.setattr(discovery, "open", deny, raising=False)
    report = Report()
    files = discover([tmp_path / "d"], report)
    assert names(files, tmp_path) == ["d/open.txt"]
    assert report.files_skipped == [{"path": str(locked), "reason": "unreadable"}]


def test_missing_path_and_empty_glob_are_errors(tmp_path):
    with pytest.raises(SourceError, match=r"no such file or folder: .*data/x\.txt"):
        discover([tmp_path / "data" / "x.txt"], Report())
    with pytest.raises(SourceError, match=r"glob matched no files: .*\*\.jsonl"):
        discover([str(tmp_path / "*.jsonl")], Report())


def test_no_readable_files_names_sources_and_skips(tmp_path):
    touch(tmp_path, "d/a.docx")
    touch(tmp_path, "d/.hidden.txt")
    with pytest.raises(SourceError) as raised:
        discover([tmp_path / "d"], Report())
    message = str(raised.value)
    assert str(tmp_path / "d") in message
    assert "1 hidden" in message and "1 unknown_format" in message and "format=" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"no readable files in .*empty"):
        discover([tmp_path / "empty"], Report())
    with pytest.raises(SourceError, match="no sources given"):
        discover([], Report())


def test_unreadable_folder_is_skipped(tmp_path, monkeypatch):
    touch(tmp_path, "d/ok.txt")
    touch(tmp_path, "d/locked/inner.txt")
    real_scandir = os.scandir
    locked = str(tmp_path / "d" / "locked")

    def deny(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", deny)
    report = Report()
    files = discover([tmp_path / "d"], report)
    assert names(files, tmp_path) == ["d/ok.txt"]
    assert report.files_skipped == [{"path": locked, "reason": "unreadable"}]
