"""`validate`: per-file tables from the same readers, field types, exit codes through the CLI."""

import json
import subprocess
import sys

import pytest

from streampack.errors import DataError
from streampack.validate import validate


def corpus(folder):
    folder.mkdir()
    (folder / "a.jsonl").write_text(
        '{"text": "one", "id": 1}\n{"text": 2, "id": "x"}\n{"text": "three", "id": 2}\n'
    )
    (folder / "b.jsonl").write_text('{"text": "four", "lang": "en"}\n')
    (folder / "c.txt").write_text("a line\n\nlonger line here\n")
    return folder


def test_validate_reports_records_fields_and_lengths(tmp_path):
    folder = corpus(tmp_path / "corpus")
    result = validate(folder)
    assert not result["ok"] and result["problems"] == 1
    a, b, c = result["files"]
    assert b["fields"] == {"text": {"string": 1}, "lang": {"string": 1}}
    assert (a["format"], a["records"], a["documents"]) == ("jsonl", 3, 2)
    assert a["bad"] == {"non_string_text": {"count": 1, "first": [f"{folder / 'a.jsonl'}:2"]}}
    assert a["fields"] == {"text": {"string": 2, "number": 1}, "id": {"number": 2, "string": 1}}
    assert a["type_changes"] == ["id", "text"]
    assert a["length_chars"] == {"min": 3, "median": 4, "p95": 5, "max": 5}
    assert c["records"] == 2 and c["fields"] is None
    assert c["length_chars"]["min"] == 7 and c["length_chars"]["max"] == 17
    across = result["fields_across_files"]
    assert across["missing_in"] == {
        "id": [str(folder / "b.jsonl")],
        "lang": [str(folder / "a.jsonl")],
    }
    # "id" changes type within a.jsonl only (type_changes); "text" differs between the files.
    assert across["types_differ"] == {
        "text": {str(folder / "a.jsonl"): ["number", "string"], str(folder / "b.jsonl"): ["string"]}
    }


def test_clean_corpus_is_ok_and_strict_raises(tmp_path):
    clean = tmp_path / "clean.txt"
    clean.write_text("fine\n\nalso fine\n")
    assert validate(clean)["ok"]
    folder = corpus(tmp_path / "corpus")
    with pytest.raises(DataError, match=r"a.jsonl:2: text field is not a string"):
        validate(folder, on_error="raise")


def run(*args):
    command = [sys.executable, "-m", "streampack", "validate", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True)


def test_cli_exit_codes_and_json(tmp_path):
    folder = corpus(tmp_path / "corpus")
    done = run(folder, "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["problems"] == 1
    table = run(folder)
    assert table.returncode == 1 and "non_string_text" in table.stdout
    assert "field 'id'" in table.stdout
    strict = run(folder, "--strict")
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert strict.stderr.count("\n") == 1 and "a.jsonl:2:" in strict.stderr
    clean = tmp_path / "clean.txt"
    clean.write_text("fine\n")
    assert run(clean).returncode == 0
    assert run(clean, "--on-error", "nope").returncode == 2


def test_repaired_records_are_used_and_apart_from_bad_ones(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"good\nba\xffd\n")
    result = validate(path)
    # A replaced byte is no problem: the record is a document, listed under repaired.
    assert result["ok"] and result["problems"] == 0 and result["skipped"] == {}
    [entry] = result["files"]
    assert (entry["records"], entry["documents"], entry["bad"]) == (2, 2, {})
    where = [f"{path}:2: byte offset 7"]
    assert entry["repaired"] == {"invalid_utf8": {"count": 1, "first": where}}
    assert result["repaired"] == {"invalid_utf8": {"count": 1, "first": where}}
    strict = validate(path, encoding_errors="skip")
    assert not strict["ok"] and strict["problems"] == 1 and strict["repaired"] == {}
    table = run(path)
    assert table.returncode == 0 and "repaired invalid_utf8" in table.stdout
