"""Codecs: detection by magic bytes, every format through every codec, truncated files."""

import bz2
import gzip
import lzma
import random

import pytest
import zstandard

from streampack.report import Report
from streampack.sources import discover

COMPRESS = {
    "gzip": gzip.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    # Level 1 means 100 kB blocks, so a truncated file still holds whole blocks.
    "bz2": lambda data: bz2.compress(data, 1),
    "xz": lzma.compress,
}
SUFFIX = {"gzip": ".gz", "zstd": ".zst", "bz2": ".bz2", "xz": ".xz"}

LINES = [f"line {i}: " + "文字" * (i % 13) for i in range(2000)]
TEXT = ("\n".join(LINES) + "\n").encode()
# Lines that do not compress to almost nothing, so half of a compressed file holds many of them.
_RANDOM = random.Random(0)
NOISY = [
    "".join(_RANDOM.choices("abcdefghij 中文字", k=_RANDOM.randint(5, 80))) for _ in range(20000)
]
NOISY = [line if line.strip() else "x" for line in NOISY]
SAMPLES = {
    "text": ("a.txt", TEXT, [line + "\n" for line in LINES]),
    "jsonl": (
        "a.jsonl",
        b"".join(b'{"text": "%d"}\n' % i for i in range(500)),
        [str(i) for i in range(500)],
    ),
    "json": (
        "a.json",
        b"[" + b",".join(b'{"text": "%d"}' % i for i in range(500)) + b"]",
        [str(i) for i in range(500)],
    ),
    "csv": (
        "a.csv",
        b"text\n" + b"".join(b'"r\n%d"\n' % i for i in range(300)),
        [f"r\n{i}" for i in range(300)],
    ),
    "tsv": (
        "a.tsv",
        b"id\ttext\n" + b"".join(b"%d\tv%d\n" % (i, i) for i in range(300)),
        [f"v{i}" for i in range(300)],
    ),
}


@pytest.mark.parametrize("codec", list(COMPRESS))
@pytest.mark.parametrize("fmt", list(SAMPLES))
def test_every_format_through_every_codec(tmp_path, read, codec, fmt):
    name, data, expected = SAMPLES[fmt]
    path = tmp_path / (name + SUFFIX[codec])
    path.write_bytes(COMPRESS[codec](data))
    result = read(path, batch_bytes=2048)
    assert result.texts == expected
    entry = result.report.files[str(path)]
    assert (entry["format"], entry["codec"]) == (fmt, codec)
    assert entry["documents"] == len(expected)
    assert entry["bytes"] == path.stat().st_size
    assert result.skipped() == {}


@pytest.mark.parametrize("codec", list(COMPRESS))
def test_codec_is_taken_from_magic_bytes_not_the_name(tmp_path, read, codec):
    disguised = tmp_path / "plain-looking.txt"
    disguised.write_bytes(COMPRESS[codec](b"hidden\n"))
    honest_name = tmp_path / f"not-compressed.txt{SUFFIX[codec]}"
    honest_name.write_bytes(b"as is\n")
    report = Report()
    files = discover([disguised, honest_name], report)
    assert [(f.format, f.codec) for f in files] == [("text", codec), ("text", "none")]
    assert read(disguised, honest_name).texts == ["hidden\n", "as is\n"]


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path, read):
    gz = tmp_path / "a.txt.gz"
    gz.write_bytes(gzip.compress(b"one\n") + gzip.compress(b"two\n"))
    zst = tmp_path / "b.txt.zst"
    compressor = zstandard.ZstdCompressor()
    zst.write_bytes(compressor.compress(b"three\nfo") + compressor.compress(b"ur\n"))
    assert read(gz, zst).texts == ["one\n", "two\n", "three\n", "four\n"]


@pytest.mark.parametrize("codec", list(COMPRESS))
def test_truncated_file_keeps_earlier_records(tmp_path, read, codec):
    path = tmp_path / f"a.txt{SUFFIX[codec]}"
    compressed = COMPRESS[codec](("\n".join(NOISY) + "\n").encode())
    path.write_bytes(compressed[: len(compressed) // 2])
    after = tmp_path / "after.txt"
    after.write_bytes(b"next file\n")
    result = read(path, after, batch_bytes=4096)
    texts = result.texts
    assert texts[-1] == "next file\n"
    kept = texts[:-1]
    assert 0 < len(kept) < len(NOISY)
    # What was kept is exactly the start of the file, whole lines only.
    assert kept == [line + "\n" for line in NOISY[: len(kept)]]
    assert result.report.skipped["corrupt_compressed"] == 1
    [where] = result.where("corrupt_compressed")
    assert where.startswith(f"{path}:{len(kept) + 1}: after {len(kept)} records: ")
    assert result.report.files[str(path)]["documents"] == len(kept)


def test_truncated_gzip_jsonl_and_csv(tmp_path, read):
    jsonl = tmp_path / "a.jsonl.gz"
    records = "".join(f'{{"text": "{line}"}}\n' for line in NOISY).encode()
    jsonl.write_bytes(gzip.compress(records)[:30000])
    csv_path = tmp_path / "a.csv.gz"
    rows = "".join(f'"{line}\n{i}"\n' for i, line in enumerate(NOISY)).encode()
    csv_path.write_bytes(gzip.compress(b"text\n" + rows)[:30000])
    result = read(jsonl, csv_path, batch_bytes=1024)
    locations = result.where("corrupt_compressed")
    assert len(locations) == 2
    jsonl_kept = result.report.files[str(jsonl)]["documents"]
    assert locations[0].startswith(f"{jsonl}:{jsonl_kept + 1}: after {jsonl_kept} records: ")
    csv_kept = result.report.files[str(csv_path)]["documents"]
    # Header line, then two physical lines per record.
    assert locations[1].startswith(f"{csv_path}:{2 * csv_kept + 2}: after {csv_kept} records: ")


def test_corrupt_gzip_is_counted(tmp_path, read):
    path = tmp_path / "a.txt.gz"
    data = bytearray(gzip.compress(TEXT))
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    path.write_bytes(bytes(data))
    result = read(path)
    assert result.report.skipped["corrupt_compressed"] == 1
    assert result.where("corrupt_compressed")[0].startswith(f"{path}:")


@pytest.mark.parametrize("codec", list(COMPRESS))
def test_file_mode_through_every_codec(tmp_path, read, codec):
    path = tmp_path / f"a.md{SUFFIX[codec]}"
    path.write_bytes(COMPRESS[codec](TEXT))
    assert read(path, doc_mode="file").texts == [TEXT.decode()]


@pytest.mark.parametrize("codec", list(COMPRESS))
def test_file_mode_truncated(tmp_path, read, codec):
    path = tmp_path / f"a.txt{SUFFIX[codec]}"
    compressed = COMPRESS[codec](("\n".join(NOISY)).encode())
    path.write_bytes(compressed[: len(compressed) // 2])
    result = read(path, doc_mode="file")
    assert result.batches == []
    assert result.where("corrupt_compressed")[0].startswith(f"{path}:1: after 0 records: ")


def test_truncated_gzip_keeps_the_records_up_to_the_damage(tmp_path, read):
    import gzip
    import zlib

    lines = [f"line {i} " + "word " * 20 for i in range(20_000)]
    data = gzip.compress("".join(f"{line}\n" for line in lines).encode())
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(data[: len(data) // 2])
    recoverable = zlib.decompressobj(wbits=31).decompress(data[: len(data) // 2]).count(b"\n")
    result = read(path)
    assert result.texts == [f"{line}\n" for line in lines[: len(result.texts)]]
    # At most one 64 KiB read of ~108-byte lines is lost to the damage.
    assert recoverable - len(result.texts) <= (64 << 10) // 100
    assert len(result.texts) > 9_000
    assert result.where("corrupt_compressed")[0].startswith(
        f"{path}:{len(result.texts) + 1}: after {len(result.texts)} records: "
    )
