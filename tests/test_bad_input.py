"""Bad input end to end: a hand-made corpus of every case, exact counts and locations, the good
records' tokens in the output, and `on_error="raise"` as one line through the CLI."""

import gzip
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streampack
from streampack.config import ReadConfig
from streampack.errors import ConfigError, DataError, SourceError
from streampack.report import Report
from streampack.sources import discover, read_batches
from streampack.sources.oversize import split_document


def read(*paths, **options):
    report = Report()
    config = ReadConfig(**options)
    files = discover([str(path) for path in paths], report, format=config.format)
    texts, lines = [], []
    for batch in read_batches(files, config, report):
        texts += batch.texts
        lines += batch.lines.tolist()
    return texts, lines, report


def bad_corpus(folder):
    """Files with every kind of bad record, and the good documents they hold, in reading order."""
    folder.mkdir()
    text = "one\r\ntwo\rthree\u2028still\u2029three\x85\x0cfour\n\n"
    (folder / "a.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (folder / "b.jsonl").write_bytes(
        b'{"text": "good 1", "id": 1}\n'
        b"\n"
        b'{"text": "bad\n'
        b"[1, 2]\n"
        b'{"id": 3}\n'
        b'{"text": null}\n'
        b'{"text": 7}\n'
        b'{"text": "   "}\n'
        b'{"text": "good 2", "id": "two"}\n'
    )
    (folder / "c.txt").write_bytes(b"")
    (folder / "d.dat").write_bytes(b"unknown extension\n")
    good = ["one\n", "two\n", "three\u2028still\u2029three\x85\x0cfour\n", "good 1", "good 2"]
    return folder, good


def test_bad_corpus_counts_and_locations(tmp_path):
    folder, good = bad_corpus(tmp_path / "corpus")
    texts, lines, report = read(folder)
    assert texts == good
    assert lines == [1, 2, 3, 1, 9]
    b = folder / "b.jsonl"
    assert dict(report.skipped) == {
        "empty_document": 2,
        "invalid_json": 1,
        "not_an_object": 1,
        "missing_text_field": 1,
        "non_string_text": 2,
    }
    assert report.locations["empty_document"] == [f"{folder / 'a.txt'}:4", f"{b}:8"]
    assert report.locations["invalid_json"][0].startswith(f"{b}:3: ")
    assert report.locations["not_an_object"] == [f"{b}:4"]
    assert report.locations["missing_text_field"] == [f"{b}:5"]
    assert report.locations["non_string_text"] == [f"{b}:6", f"{b}:7"]
    assert report.files_skipped == [{"path": str(folder / "d.dat"), "reason": "unknown_format"}]
    assert report.files[str(folder / "c.txt")]["documents"] == 0
    # A blank line of a text file is counted but is not a problem; the JSON records are.
    assert report.problems == 6


def test_good_records_reach_the_output(tmp_path, qwen):
    folder, good = bad_corpus(tmp_path / "corpus")
    blocks = streampack.stream(folder, tokenizer=qwen, block_size=64, packing=False)
    decoded = []
    for block in blocks:
        ids = block["input_ids"][block["attention_mask"] == 1].tolist()
        assert ids[-1] == qwen.eos_id
        decoded.append(qwen.decode(ids[:-1]))
    assert decoded == good
    assert blocks.report["skipped"]["non_string_text"]["count"] == 2


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("x.jsonl", b'{"text": "ok"}\n{"text": 5}\n', "x.jsonl:2: text field is not a string"),
        ("x.jsonl", b'{"text": "ok"}\n[1]\n', "x.jsonl:2: record is not a JSON object"),
        ("x.jsonl", b'{"text": "ok"}\n{"t": 1}\n', "x.jsonl:2: no text field"),
        ("x.jsonl", b'{"text": "ok"}\n{"te\n', "x.jsonl:2: malformed JSON"),
        ("x.txt", b"ok\nbad \xff byte\n", "x.txt:2: invalid UTF-8"),
    ],
)
def test_raise_stops_at_the_first_problem(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError) as caught:
        read(path, on_error="raise", encoding_errors="raise")
    text = str(caught.value)
    assert text.startswith(f"{tmp_path}/{message} (expected ")
    assert "found " in text and "\n" not in text


def test_strict_through_the_cli_is_one_line_and_exit_1(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": "ok"}\n' * 3 + b'{"text": [1]}\n')
    command = [sys.executable, "-m", "streampack", "pack", str(path), "-o", str(tmp_path / "s")]
    done = subprocess.run([*command, "--strict", "-q"], capture_output=True, text=True)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"streampack: error: {path}:4: text field is not a string "
        "(expected a string, found field 'text' of type array)"
    ]
    assert not (tmp_path / "s" / "metadata.json").exists()


def test_invalid_utf8_replace_skip_raise(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"good\nba\xffd\nalso good\n")
    texts, _, report = read(path)
    assert texts == ["good\n", "ba\ufffdd\n", "also good\n"]
    # Kept after the repair, so counted as repaired, not as skipped.
    assert report.repaired_locations["invalid_utf8"] == [f"{path}:2: byte offset 7"]
    assert report.problems == 0 and not report.skipped
    assert report.as_dict()["repaired"] == {
        "invalid_utf8": {"count": 1, "first": [f"{path}:2: byte offset 7"]}
    }
    texts, lines, report = read(path, encoding_errors="skip")
    assert (texts, lines) == (["good\n", "also good\n"], [1, 3])
    assert dict(report.skipped) == {"invalid_utf8": 1} and report.problems == 1
    assert not report.repaired
    with pytest.raises(DataError, match=r"x.txt:2: invalid UTF-8 .*offset 7\)$"):
        read(path, encoding_errors="raise")


def test_invalid_utf8_in_json_lines_skip(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "b\xff"}\n{"text": "c"}\n')
    assert read(path)[0] == ["a", "b\ufffd", "c"]
    texts, lines, report = read(path, encoding_errors="skip")
    assert (texts, lines) == (["a", "c"], [1, 3])
    assert report.locations["invalid_utf8"] == [f"{path}:2: byte offset 25"]


@pytest.mark.parametrize("encoding", ["latin-1", "gb18030"])
def test_other_encodings(tmp_path, encoding):
    docs = ["café déjà vu", "naïve"] if encoding == "latin-1" else ["发热咳嗽", "高血压 糖尿病"]
    text = tmp_path / "x.txt"
    text.write_bytes("".join(doc + "\r\n" for doc in docs).encode(encoding))
    assert read(text, encoding=encoding)[0] == [doc + "\n" for doc in docs]
    lines = tmp_path / "x.jsonl"
    body = "".join(json.dumps({"text": doc}, ensure_ascii=False) + "\n" for doc in docs)
    lines.write_bytes(body.encode(encoding))
    texts, _, report = read(lines, encoding=encoding)
    assert texts == docs and not report.skipped
    array = tmp_path / "y.json"
    array.write_bytes(
        json.dumps([{"text": doc} for doc in docs], ensure_ascii=False).encode(encoding)
    )
    assert read(array, encoding=encoding)[0] == docs


def test_encoding_that_is_not_ascii_compatible_is_refused():
    with pytest.raises(ConfigError, match="utf-16"):
        ReadConfig(encoding="utf-16")
    with pytest.raises(ConfigError, match="on_error"):
        ReadConfig(on_error="ignore")


def test_oversize_split_and_skip(tmp_path):
    path = tmp_path / "x.jsonl"
    big = "First sentence. Second one here! " * 4 + "line\n" + "x" * 70
    path.write_text(json.dumps({"text": "small"}) + "\n" + json.dumps({"text": big}) + "\n")
    texts, lines, report = read(path, max_document_bytes=64)
    assert texts[0] == "small" and "".join(texts[1:]) == big
    assert all(len(text.encode()) <= 64 for text in texts)
    assert lines == [1] + [2] * (len(texts) - 1)
    assert report.repaired["document_split"] == len(texts) - 1 and report.problems == 0
    assert report.as_dict()["skipped"] == {}
    texts, lines, report = read(path, max_document_bytes=64, oversize="skip")
    assert (texts, lines) == (["small"], [1])
    assert report.locations["document_too_large"] == [f"{path}:2: 207 bytes, cap 64"]


def test_split_prefers_lines_then_sentences_then_characters():
    assert split_document("aaaa\nbbbb\ncccc", 10) == ["aaaa\nbbbb\n", "cccc"]
    assert split_document("一二三。四五六。", 12) == ["一二三。", "四五六。"]
    assert split_document("Hello there. How are you? Fine", 14) == [
        "Hello there. ",
        "How are you? ",
        "Fine",
    ]
    assert split_document("é" * 5, 5) == ["éé", "éé", "é"]


def test_a_30_mb_line_is_read_whole(tmp_path):
    path = tmp_path / "huge.txt"
    path.write_bytes(b"small\n" + b"y" * (30 << 20))
    texts, lines, report = read(path, max_document_bytes=8 << 20)
    assert texts[0] == "small\n" and lines[0] == 1
    assert sum(map(len, texts[1:])) == 30 << 20 and set(lines[1:]) == {2}
    assert report.repaired["document_split"] == 4 and not report.skipped


def test_truncated_gzip_keeps_records_and_names_the_count(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    # Random bytes do not compress, so half the file holds more than one read of records.
    docs = [f"doc {i} {os.urandom(16).hex()}" for i in range(40000)]
    data = gzip.compress(b"".join(json.dumps({"text": doc}).encode() + b"\n" for doc in docs))
    path.write_bytes(data[: len(data) // 2])
    texts, _, report = read(path)
    assert 0 < len(texts) < len(docs) and texts == docs[: len(texts)]
    (where,) = report.locations["corrupt_compressed"]
    assert where.startswith(f"{path}:{len(texts) + 1}: after {len(texts)} records: ")


def test_parquet_bounded_batches_and_wrong_type(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(5000)]}), good, row_group_size=5000)
    report = Report()
    files = discover([str(good)], report)
    batches = list(read_batches(files, ReadConfig(batch_bytes=1024), report))
    assert len(batches) > 10 and sum(map(len, batches)) == 5000
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), wrong)
    with pytest.raises(DataError, match=r"wrong.parquet:1: .*column 'text' of type int64"):
        read(wrong, on_error="raise")


def test_paths(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        read(tmp_path / "missing.txt")
    with pytest.raises(SourceError, match="glob matched no files"):
        read(tmp_path / "*.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no readable files"):
        read(tmp_path / "empty")
    odd = tmp_path / "notes.log"
    odd.write_text("read as text\n")
    assert read(odd, format="text")[0] == ["read as text\n"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_is_listed(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("x\n")
    path.chmod(0)
    (tmp_path / "ok.txt").write_text("ok\n")
    _, _, report = read(tmp_path)
    assert report.files_skipped == [{"path": str(path), "reason": "unreadable"}]


def test_unreadable_file_is_listed_even_as_root(tmp_path, monkeypatch):
    # Root reads files whatever their mode, so the permission error is made by hand here.
    import builtins

    path = tmp_path / "secret.txt"
    path.write_text("x\n")
    (tmp_path / "ok.txt").write_text("ok\n")
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    texts, _, report = read(tmp_path)
    assert texts == ["ok\n"]
    assert report.files_skipped == [{"path": str(path), "reason": "unreadable"}]


def test_field_types_in_the_report_only_when_a_type_changes(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "one", "id": 1}\n{"text": "", "id": 2}\n')
    (folder / "b.jsonl").write_text('{"text": 5, "id": "x"}\n{"text": "two"}\n{"text": null}\n')
    (folder / "c.json").write_text('[{"text": ["x"]}, {"text": "three"}]')
    # pack's cheap form: only the text field, from what the reader counts anyway.
    texts, _, report = read(folder)
    assert texts == ["one", "two", "three"]
    assert report.as_dict()["field_types"] == {
        "text": {"array": 1, "null": 1, "number": 1, "string": 4}
    }
    # With every field collected (validate), a field that changes between files shows too.
    texts, _, report = read(folder, collect_fields=True)
    assert report.as_dict()["field_types"] == {
        "id": {"number": 2, "string": 1},
        "text": {"array": 1, "null": 1, "number": 1, "string": 4},
    }
    (folder / "b.jsonl").unlink()
    (folder / "c.json").unlink()
    assert "field_types" not in read(folder)[2].as_dict()
    assert "field_types" not in read(folder, collect_fields=True)[2].as_dict()
