"""Text files: line, paragraph and file documents, line breaks, BOM, invalid UTF-8."""

import pytest


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_line_mode_keeps_line_breaks_and_counts_blank_lines(tmp_path, read):
    path = write(tmp_path, "a.txt", b"first\nsecond\n\n   \nlast")
    result = read(path)
    assert result.texts == ["first\n", "second\n", "last"]
    assert result.lines == [1, 2, 5]
    assert result.skipped() == {"empty_document": 2}
    assert result.where("empty_document") == [f"{path}:3", f"{path}:4"]
    entry = result.report.files[str(path)]
    assert entry["format"] == "text" and entry["codec"] == "none"
    assert entry["documents"] == 3 and entry["bytes"] == path.stat().st_size


def test_whitespace_last_line_without_break_is_counted(tmp_path, read):
    path = write(tmp_path, "a.txt", b"one\n \t")
    result = read(path)
    assert result.texts == ["one\n"]
    assert result.where("empty_document") == [f"{path}:2"]


@pytest.mark.parametrize(
    "data",
    [b"a\r\nb\r\nc\r\n", b"a\rb\rc\r", b"a\nb\r\nc\r", b"\xef\xbb\xbfa\r\nb\rc\n"],
    ids=["crlf", "cr", "mixed", "bom"],
)
def test_every_line_break_becomes_lf(tmp_path, read, data):
    result = read(write(tmp_path, "a.txt", data))
    assert result.texts == ["a\n", "b\n", "c\n"]
    assert result.lines == [1, 2, 3]
    assert result.skipped() == {}


def test_crlf_split_across_reads_is_one_line_break(tmp_path, read):
    # With batch_bytes=1024 the reader reads 1024 bytes at a time: the first CR is byte 1023 and
    # its LF byte 1024, and each later line ends the same way at the next multiple of 1024.
    lines = ["x" * 1023] + ["y" * 1022] * 4
    data = "".join(line + "\r\n" for line in lines).encode()
    assert data[1023:1025] == data[2047:2049] == b"\r\n"
    result = read(write(tmp_path, "a.txt", data), batch_bytes=1024)
    assert result.texts == [line + "\n" for line in lines]
    assert result.lines == list(range(1, len(lines) + 1))
    assert result.skipped() == {}


def test_lone_cr_at_read_boundary(tmp_path, read):
    data = b"y" * 1023 + b"\r" + b"z" * 10 + b"\r"
    result = read(write(tmp_path, "a.txt", data), batch_bytes=1024)
    assert result.texts == ["y" * 1023 + "\n", "z" * 10 + "\n"]
    assert result.lines == [1, 2]


def test_only_lf_cr_and_crlf_split_lines(tmp_path, read):
    text = "a\u2028b\u2029c\x85d\x0ce\x0bf\x1cg\n"
    result = read(write(tmp_path, "a.txt", text.encode()))
    assert result.texts == [text]


def test_bom_is_removed_and_lines_start_at_one(tmp_path, read):
    result = read(write(tmp_path, "a.txt", b"\xef\xbb\xbfhello\nworld\n"))
    assert result.texts == ["hello\n", "world\n"]
    assert result.lines == [1, 2]


def test_invalid_utf8_is_replaced_and_counted_per_line_with_file_offset(tmp_path, read):
    # BOM (3 bytes) and CRLF stay in the offsets: they are positions in the file.
    data = b"\xef\xbb\xbfok\r\nba\xffd \xfe\r\nfine\n\xe4\xb8\n"
    path = write(tmp_path, "a.txt", data)
    result = read(path)
    assert result.texts == ["ok\n", "ba\ufffdd \ufffd\n", "fine\n", "\ufffd\n"]
    assert result.lines == [1, 2, 3, 4]
    assert result.skipped() == {} and result.repaired() == {"invalid_utf8": 2}
    assert data.index(b"\xff") == 9 and data.index(b"\xe4") == 20
    assert result.repaired_at("invalid_utf8") == [
        f"{path}:2: byte offset 9",
        f"{path}:4: byte offset 20",
    ]


def test_invalid_utf8_offsets_in_later_blocks(tmp_path, read):
    lines = [b"line %04d" % i for i in range(400)]
    lines[300] = b"bad \xff here"
    data = b"\n".join(lines) + b"\n"
    path = write(tmp_path, "a.txt", data)
    result = read(path, batch_bytes=1024)
    assert len(result.texts) == 400
    assert result.texts[300] == "bad \ufffd here\n"
    offset = data.index(b"\xff")
    assert result.repaired_at("invalid_utf8") == [f"{path}:301: byte offset {offset}"]


def test_many_blocks_keep_every_line_in_order(tmp_path, read):
    lines = [f"{i} " + "é" * (i % 50) for i in range(5000)]
    lines[17] = ""
    lines[4000] = "  "
    path = write(tmp_path, "a.txt", "\n".join(lines).encode())
    result = read(path, batch_bytes=4096)
    expected = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    assert result.lines == [line for line, _ in expected]
    assert result.texts == [text + "\n" for _, text in expected[:-1]] + [expected[-1][1]]
    assert result.skipped() == {"empty_document": 2}
    assert result.where("empty_document") == [f"{path}:18", f"{path}:4001"]
    assert len(result.batches) > 10
    # About batch_bytes of text per batch: one read's worth over at most.
    assert all(sum(len(t.encode()) for t in b.texts) <= 4096 + 1024 for b in result.batches)
    assert sum(b.nbytes for b in result.batches) <= path.stat().st_size


def test_line_longer_than_a_read_is_one_document(tmp_path, read):
    long = "L" * 100_000
    result = read(write(tmp_path, "a.txt", f"a\n{long}\nb\n".encode()), batch_bytes=1024)
    assert result.texts == ["a\n", long + "\n", "b\n"]
    assert result.lines == [1, 2, 3]


def test_many_blank_lines_are_counted_exactly(tmp_path, read):
    path = write(tmp_path, "a.txt", b"x\n" + b"\n" * 30 + b"y\n")
    result = read(path)
    assert result.texts == ["x\n", "y\n"]
    assert result.report.skipped["empty_document"] == 30
    assert result.where("empty_document")[:2] == [f"{path}:2", f"{path}:3"]


def test_paragraph_mode(tmp_path, read):
    data = b"p1 a\r\np1 b\n\n \n\np2\n\n\np3 a\np3 b"
    path = write(tmp_path, "a.txt", data)
    result = read(path, doc_mode="paragraph")
    assert result.texts == ["p1 a\np1 b", "p2", "p3 a\np3 b"]
    assert result.lines == [1, 6, 9]
    assert result.skipped() == {}


def test_paragraph_spanning_reads(tmp_path, read):
    paragraphs = [[f"p{p} l{i} " + "w" * 90 for i in range(p % 7 + 1)] for p in range(60)]
    data = "\n\n".join("\n".join(lines) for lines in paragraphs) + "\n"
    result = read(write(tmp_path, "a.txt", data.encode()), doc_mode="paragraph", batch_bytes=1024)
    assert result.texts == ["\n".join(lines) for lines in paragraphs]
    starts, line = [], 1
    for lines in paragraphs:
        starts.append(line)
        line += len(lines) + 1
    assert result.lines == starts


def test_file_mode_is_one_document(tmp_path, read):
    data = "\ufeffa\r\n\r\nb\u2028c\rd\n".encode()
    path = write(tmp_path, "a.txt", data)
    blank = write(tmp_path, "b.txt", b" \n\r\n\t")
    result = read(path, blank, doc_mode="file")
    assert result.texts == ["a\n\nb\u2028c\nd\n"]
    assert result.lines == [1]
    assert result.where("empty_document") == [f"{blank}:1"]


def test_file_mode_counts_invalid_utf8(tmp_path, read):
    path = write(tmp_path, "a.txt", b"one\ntw\xffo\n")
    result = read(path, doc_mode="file")
    assert result.texts == ["one\ntw\ufffdo\n"]
    assert result.repaired_at("invalid_utf8") == [f"{path}:2: byte offset 6"]


def test_empty_file_yields_nothing(tmp_path, read):
    path = write(tmp_path, "a.txt", b"")
    result = read(path)
    assert result.batches == []
    assert result.report.files[str(path)]["documents"] == 0
