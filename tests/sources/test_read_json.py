"""JSON lines and JSON arrays: the text field rule, every skip reason, streaming arrays."""

import gzip
import json

import pytest

from streampack.config import ReadConfig
from streampack.report import Report
from streampack.sources import SourceFile, read_batches


def write_lines(path, records: list) -> None:
    path.write_bytes(
        b"".join(r if isinstance(r, bytes) else json.dumps(r).encode() + b"\n" for r in records)
    )


def test_jsonl_field_rule_and_skip_reasons(tmp_path, read):
    path = tmp_path / "a.jsonl"
    write_lines(
        path,
        [
            {"text": "plain", "id": 1},  # 1
            {"content": "only string", "n": 2},  # 2: the file's field is "text", so missing
            {"a": "x", "b": "y"},  # 3: two strings, no "text"
            {"n": 1},  # 4: no string at all
            {"text": None, "other": "s"},  # 5: "text" present, so no fallback
            {"text": 5},  # 6
            [1, 2],  # 7
            b"{broken\n",  # 8
            b"\n",  # 9: blank lines are not records
            b"   \r\n",  # 10
            {"text": "  \n "},  # 11
            "just a string",  # 12
            {"text": "last"},  # 13
        ],
    )
    result = read(path)
    assert result.texts == ["plain", "last"]
    assert result.lines == [1, 13]
    assert result.skipped() == {
        "missing_text_field": 3,
        "non_string_text": 2,
        "not_an_object": 2,
        "invalid_json": 1,
        "empty_document": 1,
    }
    assert result.where("missing_text_field") == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert result.where("non_string_text") == [f"{path}:5", f"{path}:6"]
    assert result.where("not_an_object") == [f"{path}:7", f"{path}:12"]
    assert result.where("empty_document") == [f"{path}:11"]
    [invalid] = result.where("invalid_json")
    assert invalid.startswith(f"{path}:8: ") and "\n" not in invalid and len(invalid) < 200


def test_configured_text_field(tmp_path, read):
    path = tmp_path / "a.jsonl"
    write_lines(path, [{"body": "b1", "text": "t1"}, {"text": "t2"}, {"body": 3}, {"body": "b4"}])
    result = read(path, text_field="body")
    assert result.texts == ["b1", "b4"]
    assert result.where("missing_text_field") == [f"{path}:2"]
    assert result.where("non_string_text") == [f"{path}:3"]


def test_jsonl_invalid_utf8_is_replaced_and_counted(tmp_path, read):
    path = tmp_path / "a.jsonl"
    data = b'{"text": "ok"}\r\n{"text": "b\xffd"}\n{"text": bad\xff}\n'
    path.write_bytes(data)
    result = read(path)
    assert result.texts == ["ok", "b\ufffdd"]
    assert result.lines == [1, 2]
    assert data.index(b"\xff") == 27
    # Line 3 is dropped as invalid JSON, so its bytes are not counted as repaired as well.
    assert result.where("invalid_utf8") == [f"{path}:2: byte offset 27"]
    assert result.where("invalid_json")[0].startswith(f"{path}:3: ")
    assert result.skipped() == {"invalid_utf8": 1, "invalid_json": 1}


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path, read):
    path = tmp_path / "a.ndjson"
    text = "a\u2028b\u0085c\x0cd\ne"
    path.write_bytes(json.dumps({"text": text}, ensure_ascii=False).encode() + b"\n")
    assert read(path).texts == [text]


def test_jsonl_over_many_reads(tmp_path, read):
    path = tmp_path / "a.jsonl"
    records = [{"text": f"record {i} " + "ü" * (i % 40)} for i in range(3000)]
    write_lines(path, records)
    result = read(path, batch_bytes=2048)
    assert result.texts == [r["text"] for r in records]
    assert result.lines == list(range(1, 3001))
    assert len(result.batches) > 10


def test_json_file_starting_with_an_object_is_json_lines(tmp_path, read):
    path = tmp_path / "a.json"
    path.write_bytes(b'\xef\xbb\xbf\n  {"text": "one"}\n{"text": "two"}\n')
    result = read(path)
    assert result.texts == ["one", "two"]
    assert result.lines == [2, 3]
    assert result.report.files[str(path)]["format"] == "json"


def test_json_array_is_streamed_with_element_numbers(tmp_path, read):
    path = tmp_path / "a.json"
    elements = [
        {"text": "e1"},
        {"title": "only", "score": 1.5},
        "not an object",
        {"text": None},
        {"x": 1},
        {"text": " "},
        {"text": "e7", "nested": {"text": "no"}},
    ]
    path.write_text(json.dumps(elements, indent=2))
    result = read(path)
    assert result.texts == ["e1", "e7"]
    assert result.lines == [1, 7]
    assert result.where("not_an_object") == [f"{path}:3"]
    assert result.where("non_string_text") == [f"{path}:4"]
    assert result.where("missing_text_field") == [f"{path}:2", f"{path}:5"]
    assert result.where("empty_document") == [f"{path}:6"]


def test_json_array_in_batches(tmp_path, read):
    path = tmp_path / "a.json"
    elements = [{"text": f"element {i} " + "x" * 200} for i in range(500)]
    path.write_text(json.dumps(elements))
    result = read(path, batch_bytes=4096)
    assert result.texts == [e["text"] for e in elements]
    assert result.lines == list(range(1, 501))
    assert len(result.batches) >= 20


def test_malformed_json_array_keeps_elements_before(tmp_path, read):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"text": "a"}, {"text": "b"}, {"text": oops}, {"text": "d"}]')
    result = read(path)
    assert result.texts == ["a", "b"]
    assert result.skipped() == {"invalid_json": 1}
    [where] = result.where("invalid_json")
    assert where.startswith(f"{path}:3: ")


def test_truncated_json_array(tmp_path, read):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"text": "a"}, {"text": "b"')
    result = read(path)
    assert result.texts == ["a"]
    assert result.where("invalid_json")[0].startswith(f"{path}:2: ")


def test_json_array_invalid_utf8_is_replaced_and_counted(tmp_path, read):
    path = tmp_path / "a.json"
    data = b'[{"text": "a\xffb"}, {"text": "c"}]'
    path.write_bytes(data)
    result = read(path)
    assert result.texts == ["a\ufffdb", "c"]
    assert result.where("invalid_utf8") == [f"{path}: byte offset {data.index(bytes([0xFF]))}"]


def test_json_array_multibyte_characters_across_reads(tmp_path):
    # ijson asks for fixed-size reads, which cut multibyte characters; none may be miscounted.
    path = tmp_path / "a.json.gz"
    elements = [{"text": "中文" * 5000 + str(i)} for i in range(40)]
    path.write_bytes(gzip.compress(json.dumps(elements, ensure_ascii=False).encode()))
    report = Report()
    file = SourceFile(str(path), "json", "gzip", path.stat().st_size)
    batches = list(read_batches([file], ReadConfig(), report))
    assert [t for b in batches for t in b.texts] == [e["text"] for e in elements]
    assert report.skipped_total == 0


@pytest.mark.parametrize("data", [b"42", b'"text"', b"  null\n"])
def test_json_that_is_neither_array_nor_objects(tmp_path, read, data):
    path = tmp_path / "a.json"
    path.write_bytes(data)
    result = read(path)
    assert result.batches == []
    [where] = result.where("invalid_json")
    assert where.startswith(f"{path}:1: expected '['")


def test_format_option_reads_json_lines_from_any_name(tmp_path, read):
    path = tmp_path / "records.log"
    write_lines(path, [{"text": "x"}])
    assert read(path, format="jsonl").texts == ["x"]


def test_only_string_field_is_chosen_once_per_file(tmp_path, read):
    # No record has "text": the first record's only string field is the file's field, and a
    # record without it is counted, never read from its own single string field (a url here).
    path = tmp_path / "a.jsonl"
    write_lines(path, [{"body": "first", "n": 1}, {"url": "http://x"}, {"body": "third"}])
    result = read(path)
    assert result.texts == ["first", "third"]
    assert result.where("missing_text_field") == [f"{path}:2"]
