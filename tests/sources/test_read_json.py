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
    assert result.repaired_at("invalid_utf8") == [f"{path}:2: byte offset 27"]
    assert result.where("invalid_json")[0].startswith(f"{path}:3: ")
    assert result.skipped() == {"invalid_json": 1}
    assert result.repaired() == {"invalid_utf8": 1}


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


def test_malformed_json_array_element_is_counted_and_passed_over(tmp_path, read):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"text":"ok1"},{"text":"ok2"},{"text": oops},{"text":"ok4"}]')
    result = read(path)
    assert result.texts == ["ok1", "ok2", "ok4"]
    assert result.lines == [1, 2, 4]
    assert result.skipped() == {"invalid_json": 1}
    [where] = result.where("invalid_json")
    assert where.startswith(f"{path}:3: unexpected character")


@pytest.mark.parametrize(
    "body, texts, lines, bad",
    [
        # Brackets and commas inside strings, escaped quotes, nesting, numbers and literals.
        (
            b'{"text":"a,]}\\"["}, {"x": oops, "n": [1, {"m": "]"}]}, {"text":"b"}, {"text":"c"}',
            ['a,]}"[', "b", "c"],
            [1, 3, 4],
            [2],
        ),
        # A raw newline breaks a string; the scan goes on after it.
        (b'{"text":"a"},\n{"text":"no\nend"},\n{"text":"c"}', ["a", "c"], [1, 3], [2]),
        # An empty element, then a comma before the end.
        (b'{"text":"a"},,{"text":"c"},', ["a", "c"], [1, 3], [2, 4]),
        # Deeper than the whole-element pattern reaches: the token scan takes over.
        (b'{"text":"a","m":[[[[{"q":[1]}]]]]},{"text": tru},{"text":"c"}', ["a", "c"], [1, 3], [2]),
    ],
)
def test_json_array_resynchronises_after_bad_elements(tmp_path, read, body, texts, lines, bad):
    path = tmp_path / "a.json"
    path.write_bytes(b"[" + body + b"]")
    result = read(path)
    assert result.texts == texts
    assert result.lines == lines
    assert result.skipped() == {"invalid_json": len(bad)}
    assert [where.split(": ")[0] for where in result.where("invalid_json")] == [
        f"{path}:{n}" for n in bad
    ]


def test_json_array_elements_across_reads_and_a_bad_one_in_a_later_block(tmp_path, read):
    path = tmp_path / "a.json"
    elements = [
        json.dumps({"text": f"element {i} " + "x" * 300, "m": {"n": [i]}}) for i in range(300)
    ]
    elements[250] = '{"text": "broken" "m": 1}'
    path.write_text("[\n" + ",\n".join(elements) + "\n]\n")
    result = read(path, batch_bytes=1024)
    assert result.lines == [n for n in range(1, 301) if n != 251]
    assert result.texts[-1] == "element 299 " + "x" * 300
    assert [where.split(": ")[0] for where in result.where("invalid_json")] == [f"{path}:251"]


def test_json_array_one_element_longer_than_many_reads(tmp_path, read):
    path = tmp_path / "a.json"
    long = "y" * (3 << 20)
    path.write_text(json.dumps([{"text": "a"}, {"text": long}, {"text": "c"}]))
    result = read(path, batch_bytes=4096)
    assert result.texts == ["a", long, "c"]
    assert result.skipped() == {}


def test_truncated_json_array(tmp_path, read):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"text": "a"}, {"text": "b"')
    result = read(path)
    assert result.texts == ["a"]
    assert result.skipped() == {"invalid_json": 1}
    assert result.where("invalid_json")[0].startswith(f"{path}:2: ")


@pytest.mark.parametrize(
    "data, detail",
    [
        (b'[{"text": "a"}, {"text": "b"}', "the file ends before the array's closing ']'"),
        (b'[{"text": "a"}, {"text": "b"}] {"text": "c"}', "data after the array's closing ']'"),
    ],
)
def test_json_array_unclosed_or_followed_by_data(tmp_path, read, data, detail):
    path = tmp_path / "a.json"
    path.write_bytes(data)
    result = read(path)
    assert result.texts == ["a", "b"]
    assert result.where("invalid_json") == [f"{path}:3: {detail}"]


def test_json_array_invalid_utf8_is_replaced_and_counted(tmp_path, read):
    path = tmp_path / "a.json"
    data = b'[{"text": "a"}, {"text": "a\xffb"}, {"text": "c"}]'
    path.write_bytes(data)
    result = read(path)
    assert result.texts == ["a", "a\ufffdb", "c"]
    assert result.skipped() == {}
    offset = data.index(b"\xff")
    assert result.repaired_at("invalid_utf8") == [f"{path}:2: byte offset {offset}"]


def test_json_array_invalid_utf8_skip_drops_its_element(tmp_path, read):
    path = tmp_path / "a.json"
    data = b'\xef\xbb\xbf[{"text": "a"}, {"text": "a\xffb"}, {"text": "c"}, {"t": bad\xfe}]'
    path.write_bytes(data)
    result = read(path, encoding_errors="skip")
    assert result.texts == ["a", "c"]
    assert result.lines == [1, 3]
    assert result.repaired() == {}
    assert result.skipped() == {"invalid_utf8": 1, "invalid_json": 1}
    offset = data.index(b"\xff")
    assert result.where("invalid_utf8") == [f"{path}:2: byte offset {offset}"]
    assert result.where("invalid_json")[0].startswith(f"{path}:4: ")


def test_json_array_in_another_encoding(tmp_path, read):
    # "乗" is 0x81 0x5C in GB18030: its second byte is a backslash, and must not escape the quote.
    path = tmp_path / "a.json"
    path.write_bytes('[{"text": "乗"}, {"text": "b\x80"}, {"text": "c"}]'.encode("gb18030"))
    bad = path.read_bytes().replace(b"\x81\x30\x81\x30", b"\xff")
    path.write_bytes(bad)
    result = read(path, encoding="gb18030")
    assert result.texts == ["乗", "b\ufffd", "c"]
    assert result.repaired_at("invalid_encoding") == [f"{path}:2"]
    result = read(path, encoding="gb18030", encoding_errors="skip")
    assert result.texts == ["乗", "c"]
    assert result.where("invalid_encoding") == [f"{path}:2"]


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
