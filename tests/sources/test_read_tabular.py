"""Parquet, CSV and TSV: column choice, row and line numbers, batches smaller than row groups."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def write_parquet(path, columns: dict, row_group_size: int | None = None) -> None:
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


def test_parquet_row_groups_read_in_smaller_batches(tmp_path, read):
    path = tmp_path / "a.parquet"
    texts = [f"row {i} " + "z" * 150 for i in range(95)]
    texts[10] = None
    texts[40] = ""
    texts[41] = "  "
    write_parquet(path, {"id": list(range(95)), "text": texts}, row_group_size=30)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    result = read(path, batch_bytes=1024)
    kept = [(i + 1, t) for i, t in enumerate(texts) if t and t.strip()]
    assert result.texts == [t for _, t in kept]
    assert result.lines == [row for row, _ in kept]
    # About 1 KiB of 157-character rows per batch: several batches inside each 30-row group.
    assert max(len(b) for b in result.batches) < 30
    assert len(result.batches) > 8
    assert result.where("non_string_text") == [f"{path}:11"]
    assert result.where("empty_document") == [f"{path}:41", f"{path}:42"]
    entry = result.report.files[str(path)]
    assert entry["documents"] == 92 and entry["codec"] == "none"
    assert entry["bytes"] == path.stat().st_size
    assert sum(b.nbytes for b in result.batches) <= path.stat().st_size


def test_parquet_only_string_column_is_used(tmp_path, read):
    path = tmp_path / "a.pq"
    write_parquet(path, {"n": [1, 2], "body": pa.array(["x", "y"], type=pa.large_string())})
    assert read(path).texts == ["x", "y"]


def test_parquet_dictionary_strings(tmp_path, read):
    path = tmp_path / "a.parquet"
    write_parquet(path, {"text": pa.array(["a", "b", "a"]).dictionary_encode()})
    assert read(path).texts == ["a", "b", "a"]


def test_parquet_without_a_usable_column_counts_every_row(tmp_path, read):
    two = tmp_path / "two.parquet"
    write_parquet(two, {"a": ["x"] * 7, "b": ["y"] * 7})
    numbers = tmp_path / "numbers.parquet"
    write_parquet(numbers, {"text": list(range(5))})
    result = read(two, numbers)
    assert result.batches == []
    assert result.report.skipped["missing_text_field"] == 7
    assert result.report.skipped["non_string_text"] == 5
    assert result.where("missing_text_field") == [f"{two}:1"]
    assert result.where("non_string_text") == [f"{numbers}:1"]


def test_parquet_configured_column(tmp_path, read):
    path = tmp_path / "a.parquet"
    write_parquet(path, {"text": ["no"], "answer": ["yes"]})
    assert read(path, text_field="answer").texts == ["yes"]
    result = read(path, text_field="missing")
    assert result.where("missing_text_field") == [f"{path}:1"]


def test_truncated_parquet_is_counted_not_raised(tmp_path, read):
    path = tmp_path / "a.parquet"
    write_parquet(path, {"text": ["a"] * 100})
    path.write_bytes(path.read_bytes()[:-20])
    result = read(path)
    assert result.batches == []
    [where] = result.where("corrupt_compressed")
    assert where.startswith(f"{path}:1: after 0 records: ")


def test_csv_quoted_multiline_fields_and_line_numbers(tmp_path, read):
    path = tmp_path / "a.csv"
    path.write_bytes(
        b"id,text,label\r\n"  # 1
        b'1,"first, with comma",a\r\n'  # 2
        b'2,"two\r\nline ""quoted""",b\r\n'  # 3-4
        b"\r\n"  # 5: blank, not a record
        b"3,,c\r\n"  # 6: empty text
        b"4\r\n"  # 7: short row
        b'5,"three\nphysical\nlines",d\n'  # 8-10
        b"6,last,e"  # 11
    )
    result = read(path)
    assert result.texts == [
        "first, with comma",
        'two\nline "quoted"',
        "three\nphysical\nlines",
        "last",
    ]
    assert result.lines == [2, 3, 8, 11]
    assert result.skipped() == {"empty_document": 1, "missing_text_field": 1}
    assert result.where("empty_document") == [f"{path}:6"]
    assert result.where("missing_text_field") == [f"{path}:7"]


def test_csv_single_column_without_text_header(tmp_path, read):
    path = tmp_path / "a.csv"
    path.write_text("\ufeffcontent\nhello\nworld\n")
    result = read(path)
    assert result.texts == ["hello", "world"]
    assert result.lines == [2, 3]


def test_csv_without_text_column_counts_rows(tmp_path, read):
    path = tmp_path / "a.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    result = read(path)
    assert result.batches == []
    assert result.where("missing_text_field") == [f"{path}:2", f"{path}:3"]


def test_csv_large_field_and_many_batches(tmp_path, read):
    path = tmp_path / "a.csv"
    big = "B" * 300_000  # above the csv module's default 128 KiB field limit
    rows = [f"r{i}," + ("s" * 100 if i != 50 else big) for i in range(200)]
    path.write_text("id,text\n" + "\n".join(rows) + "\n")
    result = read(path, batch_bytes=2048)
    assert len(result.texts) == 200
    assert result.texts[50] == big
    assert result.lines == list(range(2, 202))
    assert len(result.batches) > 5


def test_tsv(tmp_path, read):
    path = tmp_path / "a.tsv"
    path.write_text('text\tsource\nhello, world\tweb\n"tab\there"\tbook\n')
    result = read(path)
    assert result.texts == ["hello, world", "tab\there"]
    assert result.lines == [2, 3]


def test_csv_invalid_utf8_counted_at_its_line(tmp_path, read):
    path = tmp_path / "a.csv"
    data = b"text\nfine\nbro\xffken\n"
    path.write_bytes(data)
    result = read(path)
    assert result.texts == ["fine", "bro\ufffdken"]
    assert data.index(b"\xff") == 13
    assert result.repaired_at("invalid_utf8") == [f"{path}:3: byte offset 13"]


@pytest.mark.parametrize("name", ["a.csv", "a.tsv"])
def test_empty_table_file(tmp_path, read, name):
    path = tmp_path / name
    path.write_text("")
    assert read(path).batches == []
