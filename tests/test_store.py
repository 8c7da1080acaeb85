"""The token store: dtype choice, atomic commits, random access, and the verifier."""

import json

import numpy as np
import pytest

import streampack
from streampack.errors import StoreError
from streampack.pack import BlockBatch
from streampack.store import StoreWriter, TokenStore, choose_dtype, verify_store


def _write_text(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


LINES = [
    f"Patient {i} reports fever of {37 + i % 4}.{i % 10} degrees and a dry cough."
    for i in range(300)
]


def test_dtype_choice():
    assert choose_dtype(65_536) == np.dtype("<u2")
    assert choose_dtype(65_537) == np.dtype("<u4")
    assert choose_dtype(151_665) == np.dtype("<u4")


def test_qwen_store_is_uint32_and_round_trips(tmp_path, qwen):
    source = _write_text(tmp_path / "notes.txt", LINES)
    report = streampack.pack(
        [source], tmp_path / "store", tokenizer=qwen, block_size=64, remainder="pad"
    )
    store = TokenStore(tmp_path / "store")
    assert store.dtype == np.dtype("<u4")
    assert len(store) == report["blocks"]
    assert verify_store(tmp_path / "store") == []
    # Every block decoded and joined gives back the source text, an EOS after each line.
    text = "".join(store.decode(i, qwen) for i in range(len(store)))
    assert text == "".join(line + "\n<|endoftext|>" for line in LINES)
    last = store[-1]
    assert last["attention_mask"].sum() == store.lengths[-1]
    assert (last["labels"][last["attention_mask"] == 0] == -100).all()
    assert last["input_ids"].dtype == np.int64


def test_small_vocabulary_store_is_uint16(tmp_path, tiny_tokenizer):
    source = _write_text(tmp_path / "notes.txt", ["fever and cough", "blood pressure"] * 40)
    streampack.pack([source], tmp_path / "store", tokenizer=str(tiny_tokenizer), block_size=16)
    store = TokenStore(tmp_path / "store")
    assert store.dtype == np.dtype("<u2")
    tiny = streampack.load_tokenizer(str(tiny_tokenizer))
    # This tokenizer adds a BOS: each document is BOS, its ids, then exactly one EOS.
    expected = []
    for line in ["fever and cough", "blood pressure"] * 40:
        expected += [
            *tiny.prefix,
            *tiny.hf.encode(line + "\n", add_special_tokens=False).ids,
            tiny.eos_id,
        ]
    flat = np.concatenate([store.block_tokens(i) for i in range(len(store))])
    assert flat.tolist() == expected[: len(flat)]
    assert len(expected) - len(flat) == store.metadata["dropped_tokens"] < 16
    assert verify_store(tmp_path / "store") == []


def test_store_id_that_does_not_fit_is_refused(tmp_path):
    writer = StoreWriter(tmp_path / "store", block_size=4, dtype=np.dtype("<u2"))
    batch = BlockBatch(
        tokens=np.array([[1, 2, 70_000, 3]], dtype=np.uint32),
        lengths=np.array([4], dtype=np.int32),
        first_block=0,
        doc_ends=np.array([4]),
    )
    with pytest.raises(StoreError, match="token id 70000 does not fit the store's uint16"):
        writer.write(batch)


def test_unfinished_store_is_not_complete(tmp_path):
    writer = StoreWriter(tmp_path / "store", block_size=4, dtype=np.dtype("<u2"), shard_bytes=8)
    for first in range(3):
        writer.write(
            BlockBatch(
                np.ones((1, 4), np.uint32),
                np.array([4], np.int32),
                first,
                np.array([4 * first + 4]),
            )
        )
    # killed here: shards committed, no metadata
    assert (tmp_path / "store" / "shard-00000.tokens").is_file()
    with pytest.raises(StoreError, match="not a complete token store"):
        TokenStore(tmp_path / "store")
    assert "not a complete token store" in verify_store(tmp_path / "store")[0]


def test_killed_mid_shard_leaves_only_a_partial_file(tmp_path):
    writer = StoreWriter(tmp_path / "store", block_size=4, dtype=np.dtype("<u2"))
    writer.write(
        BlockBatch(np.ones((2, 4), np.uint32), np.array([4, 4], np.int32), 0, np.array([8]))
    )
    names = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert names == ["shard-00000.tokens.partial"]
    writer.abort()
    assert list((tmp_path / "store").iterdir()) == []


def test_existing_store_needs_overwrite(tmp_path, qwen):
    source = _write_text(tmp_path / "a.txt", LINES[:20])
    streampack.pack([source], tmp_path / "store", tokenizer=qwen, block_size=32)
    with pytest.raises(StoreError, match="pass --overwrite"):
        streampack.pack([source], tmp_path / "store", tokenizer=qwen, block_size=32)
    streampack.pack([source], tmp_path / "store", tokenizer=qwen, block_size=16, overwrite=True)
    assert TokenStore(tmp_path / "store").block_size == 16


def test_folder_with_other_files_is_never_written(tmp_path, qwen):
    source = _write_text(tmp_path / "a.txt", LINES[:20])
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not part of a store"):
        streampack.pack([source], target, tokenizer=qwen, overwrite=True)
    assert (target / "thesis.tex").read_text() == "precious"


def test_verify_finds_tampering(tmp_path, qwen):
    source = _write_text(tmp_path / "a.txt", LINES)
    streampack.pack([source], tmp_path / "store", tokenizer=qwen, block_size=32)
    tokens = tmp_path / "store" / "shard-00000.tokens"
    data = bytearray(tokens.read_bytes())
    data[10] ^= 0xFF
    tokens.write_bytes(bytes(data))
    problems = verify_store(tmp_path / "store")
    assert any("crc32 checksum" in p for p in problems)
    meta_path = tmp_path / "store" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["tokens"] += 1
    meta_path.write_text(json.dumps(meta))
    assert any("tokens" in p and "!=" in p for p in verify_store(tmp_path / "store"))


def test_random_access_and_position_ids(tmp_path, qwen):
    source = _write_text(tmp_path / "a.txt", LINES)
    streampack.pack(
        [source],
        tmp_path / "store",
        tokenizer=qwen,
        block_size=32,
        position_ids="reset",
        shard_bytes=1024,
        batch_bytes=1024,
    )
    store = TokenStore(tmp_path / "store")
    assert len(store.shards) > 1
    streamed = list(
        streampack.stream([source], tokenizer=qwen, block_size=32, position_ids="reset")
    )
    assert len(streamed) == len(store)
    for index in (0, 1, len(store) // 2, len(store) - 1):
        for key in ("input_ids", "labels", "attention_mask", "position_ids"):
            assert np.array_equal(store[index][key], streamed[index][key]), (index, key)
    with pytest.raises(IndexError, match="out of range"):
        store[len(store)]


def test_store_inside_the_corpus_is_not_read_back(tmp_path, qwen):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _write_text(corpus / "a.txt", LINES[:50])
    first = streampack.pack([corpus], corpus / "store", tokenizer=qwen, block_size=32)
    again = streampack.pack(
        [corpus], corpus / "store", tokenizer=qwen, block_size=32, overwrite=True
    )
    assert again["documents"] == first["documents"] == 50
    assert again["skipped"] == {}
    assert {"path": str(corpus / "store"), "reason": "token_store"} in again["files_skipped"]


def test_store_folder_that_cannot_be_made(tmp_path, qwen):
    source = _write_text(tmp_path / "a.txt", LINES[:5])
    with pytest.raises(StoreError, match="cannot create the store folder"):
        streampack.pack([source], source / "sub", tokenizer=qwen)


def test_a_run_with_no_document_is_an_error(tmp_path, qwen):
    source = tmp_path / "a.jsonl"
    source.write_text('{"url": "u1", "n": 1}\n{"url": "u2", "n": 2}\n')
    with pytest.raises(streampack.StreampackError, match=r"no documents made from .*missing_text"):
        streampack.pack([source], tmp_path / "store", tokenizer=qwen, text_field="text")
    assert not (tmp_path / "store" / "metadata.json").exists()


def test_interrupted_overwrite_keeps_the_old_store(tmp_path, qwen, monkeypatch):
    source = _write_text(tmp_path / "a.txt", LINES)
    streampack.pack([source], tmp_path / "store", tokenizer=qwen, block_size=32)
    before = (tmp_path / "store" / "shard-00000.tokens").read_bytes()

    def interrupted(self, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        streampack.pack([source], tmp_path / "store", tokenizer=qwen, block_size=16, overwrite=True)
    monkeypatch.undo()
    assert verify_store(tmp_path / "store") == []
    assert (tmp_path / "store" / "shard-00000.tokens").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "store"]
    streampack.pack([source], tmp_path / "store", tokenizer=qwen, block_size=16, overwrite=True)
    assert TokenStore(tmp_path / "store").block_size == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "store"]
