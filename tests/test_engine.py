"""End to end: sources to blocks, the same output whatever the workers, every record counted."""

import bz2
import gzip
import json
import lzma
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

import streampack
from streampack.store import TokenStore, verify_store

NOTES = [
    f"第{i}位患者主诉发热{i % 5 + 1}天，伴咳嗽、咽痛。Temperature {38 + i % 3}.{i % 10} C."
    for i in range(400)
]


def mixed_folder(root):
    """One folder holding every format and codec, each with a slice of NOTES."""
    root.mkdir()
    parts = [NOTES[i::8] for i in range(8)]
    (root / "a.txt").write_text("".join(f"{t}\n" for t in parts[0]), encoding="utf-8")
    (root / "b.txt.gz").write_bytes(gzip.compress("".join(f"{t}\n" for t in parts[1]).encode()))
    jsonl = "".join(
        json.dumps({"text": t, "id": i}, ensure_ascii=False) + "\n" for i, t in enumerate(parts[2])
    )
    (root / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl.encode()))
    (root / "d.json").write_text(json.dumps([{"text": t} for t in parts[3]], ensure_ascii=False))
    pq.write_table(pa.table({"text": parts[4]}), root / "e.parquet", row_group_size=7)
    csv = "id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(parts[5]))
    (root / "f.csv.bz2").write_bytes(bz2.compress(csv.encode()))
    tsv = "text\n" + "".join(f"{t}\n" for t in parts[6])
    (root / "g.tsv.xz").write_bytes(lzma.compress(tsv.encode()))
    # A gzip file with a misleading name: found by its magic bytes.
    (root / "h.txt").write_bytes(gzip.compress("".join(f"{t}\n" for t in parts[7]).encode()))
    return root, [t for part in parts for t in part]


def test_every_format_and_codec_reaches_the_blocks(tmp_path, qwen):
    folder, texts = mixed_folder(tmp_path / "corpus")
    stream = streampack.stream([folder], tokenizer=qwen, block_size=128, remainder="pad")
    blocks = list(stream)
    report = stream.report
    assert report["documents"] == len(texts)
    assert report["skipped"] == {}
    assert len(report["files"]) == 8
    joined = "".join(qwen.decode(b["input_ids"][b["attention_mask"] == 1]) for b in blocks)
    docs = joined.split("<|endoftext|>")
    assert docs[-1] == ""
    # Text files keep the line break; JSON, parquet and CSV values are taken as they are.
    assert [d.rstrip("\n") for d in docs[:-1]] == texts
    assert report["tokens"] == report["blocks"] * 128 - report["padded_tokens"]


def _store_bytes(path):
    return {
        p.name: p.read_bytes()
        for p in sorted(path.iterdir())
        if p.name != "report.json" and p.name != "metadata.json"
    }


@pytest.mark.parametrize("backend", ["quicktok", "tokenizers"])
def test_output_is_identical_for_any_number_of_workers(tmp_path, qwen, backend):
    folder, _ = mixed_folder(tmp_path / "corpus")
    stores = []
    for workers in (1, 2, 3):
        out = tmp_path / f"store-{workers}"
        streampack.pack(
            [folder],
            out,
            tokenizer=qwen,
            block_size=64,
            backend=backend,
            workers=workers,
            batch_bytes=2048,
        )
        stores.append(_store_bytes(out))
        assert verify_store(out) == []
    assert stores[0] == stores[1] == stores[2]


def test_backends_build_identical_stores(tmp_path, qwen):
    folder, _ = mixed_folder(tmp_path / "corpus")
    for backend in ("quicktok", "tokenizers"):
        streampack.pack(
            [folder],
            tmp_path / backend,
            tokenizer=qwen,
            block_size=64,
            backend=backend,
            batch_bytes=4096,
        )
    assert _store_bytes(tmp_path / "quicktok") == _store_bytes(tmp_path / "tokenizers")


def test_stream_writes_nothing_and_stops_early_without_hanging(tmp_path, qwen):
    folder, _ = mixed_folder(tmp_path / "corpus")
    before = sorted(p.name for p in folder.iterdir())
    stream = streampack.stream([folder], tokenizer=qwen, block_size=16, batch_bytes=1024)
    started = time.perf_counter()
    for count, _ in enumerate(stream, 1):
        if count == 3:
            break
    assert time.perf_counter() - started < 10
    assert sorted(p.name for p in folder.iterdir()) == before


def test_empty_lines_are_counted_with_locations(tmp_path, qwen):
    source = tmp_path / "notes.txt"
    source.write_text("first note\n\n   \nsecond note\n", encoding="utf-8")
    stream = streampack.stream([source], tokenizer=qwen, block_size=4, remainder="pad")
    list(stream)
    skipped = stream.report["skipped"]["empty_document"]
    assert skipped["count"] == 2
    assert skipped["first"] == [f"{source}:2", f"{source}:3"]
    assert stream.report["documents"] == 2


def test_real_medicalgpt_pretraining_text(tmp_path, qwen, medicalgpt):
    sources = [medicalgpt / "pretrain", medicalgpt / "rag" / "medical_corpus.txt"]
    report = streampack.pack(sources, tmp_path / "store", tokenizer=qwen, block_size=1024)
    assert verify_store(tmp_path / "store") == []
    lines = []
    for path in [*sorted((medicalgpt / "pretrain").glob("*.txt")), sources[1]]:
        lines += (
            path.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\r", "\n").split("\n")
        )
    kept = [line for line in lines if line.strip()]
    assert report["documents"] == len(kept)
    blank = len(lines) - len(kept) - len(sorted((medicalgpt / "pretrain").glob("*.txt"))) - 1
    assert report["skipped"]["empty_document"]["count"] == blank
    store = TokenStore(tmp_path / "store")
    assert report["tokens"] == len(store) * 1024 + report["dropped_tokens"]
    assert report["backend"] == "quicktok"
    assert np.all(store.lengths == 1024)
    # All blocks decoded in order give back the source documents, one EOS after each, up to the
    # dropped tail (whose cut may fall inside a character, hence the rstrip).
    flat = np.concatenate([store.block_tokens(i) for i in range(len(store))])
    decoded = qwen.decode(flat).rstrip("\ufffd")
    expected = "".join(f"{line}\n<|endoftext|>" for line in kept)
    assert expected.startswith(decoded)
    assert len(expected) - len(decoded) < 1024 * 4


def test_each_iteration_is_a_fresh_identical_pass(tmp_path, qwen):
    folder, texts = mixed_folder(tmp_path / "corpus")
    stream = streampack.stream([folder], tokenizer=qwen, block_size=100, batch_bytes=2048)
    passes, reports = [], []
    for _ in range(3):
        passes.append([block["input_ids"].tolist() for block in stream])
        reports.append(stream.report)
    assert passes[0] == passes[1] == passes[2]
    for report in reports:
        assert report["documents"] == len(texts)
        assert report["tokens"] == report["blocks"] * 100 + report["dropped_tokens"]
