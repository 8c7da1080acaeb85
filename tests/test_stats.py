"""Token counts and `streampack stats`: exact counts against the stored blocks, decoded top
tokens, tokens per character per source, the verifier's check of the counts, and the CLI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import streampack
from streampack.stats import store_stats
from streampack.store import TokenStore, verify_store

ENTRY_POINT = Path(sys.executable).with_name("streampack")
STREAMPACK = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "streampack"]

GENERAL = [f"The weather was fine on day {i} and we walked to the market." for i in range(60)]
MEDICAL = [f"患者{i}号出现高血压和糖尿病，给予胰岛素治疗。" for i in range(60)]


@pytest.fixture(scope="module")
def store(tmp_path_factory, qwen) -> Path:
    folder = tmp_path_factory.mktemp("stats")
    (folder / "general.txt").write_text("".join(line + "\n" for line in GENERAL))
    (folder / "medical.txt").write_text("".join(line + "\n" for line in MEDICAL))
    output = folder / "store"
    streampack.pack(
        [folder / "general.txt", folder / "medical.txt"],
        output,
        tokenizer=qwen,
        block_size=64,
        remainder="pad",
        shard_bytes=2048,
    )
    return output


def test_token_counts_are_the_stored_tokens(store):
    blocks = TokenStore(store)
    stored = np.concatenate(
        [blocks.block_tokens(i)[: blocks.lengths[i]] for i in range(len(blocks))]
    )
    counts = np.load(store / "token_counts.npy")
    assert counts.dtype == np.uint64
    assert np.array_equal(counts, np.bincount(stored, minlength=len(counts)))
    assert len(blocks.shards) > 1 and blocks.metadata["padded_tokens"] > 0


def test_stats_top_tokens_and_tokens_per_character(store, qwen):
    stats = store_stats(store, top=5)
    counts = np.load(store / "token_counts.npy")
    assert stats["stored_tokens"] == int(counts.sum())
    top = stats["top"]
    assert [row["count"] for row in top] == sorted(counts.tolist(), reverse=True)[:5]
    assert top[0]["share"] == pytest.approx(top[0]["count"] / stats["stored_tokens"])
    assert stats["top_share"] == pytest.approx(sum(r["count"] for r in top) / counts.sum())
    assert top[-1]["cumulative_share"] == pytest.approx(stats["top_share"])
    for row in top:
        assert row["text"] == qwen.decode([row["id"]])
    eos = next(row for row in top if row["id"] == qwen.eos_id)
    assert eos["count"] == 120 and eos["special"] and eos["text"] == "<|endoftext|>"

    general, medical = stats["sources"]
    assert general["characters"] == sum(len(line) + 1 for line in GENERAL)
    assert general["tokens"] == sum(
        len(qwen.hf.encode(line + "\n", add_special_tokens=False).ids) for line in GENERAL
    )
    assert general["documents"] == medical["documents"] == 60
    assert general["tokens_per_character"] == pytest.approx(
        general["tokens"] / general["characters"]
    )
    # Chinese takes more tokens per character than English here.
    assert medical["tokens_per_character"] > general["tokens_per_character"]
    assert stats["tokens_per_character"] == pytest.approx(
        (general["tokens"] + medical["tokens"]) / (general["characters"] + medical["characters"])
    )


def test_verify_checks_the_counts(tmp_path, store):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    counts = np.load(copy / "token_counts.npy")
    counts[counts.argmax()] -= 1
    counts[0] += 1
    np.save(copy / "token_counts.npy", counts)
    problems = verify_store(copy)
    assert any("counts of 2 token ids differ from the shards" in p for p in problems), problems
    assert verify_store(copy, checksums=False) == []
    counts[0] += 1
    np.save(copy / "token_counts.npy", counts)
    problems = verify_store(copy, checksums=False)
    assert any("the token counts add up to" in p for p in problems), problems


def test_no_token_stats(tmp_path, qwen):
    source = tmp_path / "a.txt"
    source.write_text("".join(line + "\n" for line in GENERAL))
    streampack.pack([source], tmp_path / "store", tokenizer=qwen, block_size=16, token_stats=False)
    assert not (tmp_path / "store" / "token_counts.npy").exists()
    assert "token_counts" not in json.loads((tmp_path / "store" / "metadata.json").read_text())
    stats = store_stats(tmp_path / "store")
    assert stats["token_counts"] is False and "--no-token-stats" in stats["note"]
    assert stats["sources"][0]["documents"] == 60
    assert verify_store(tmp_path / "store") == []


def test_another_vocabulary_is_not_used_to_decode(store, tiny_tokenizer):
    stats = store_stats(store, top=3, tokenizer=str(tiny_tokenizer))
    assert not stats["decoded"] and "another vocabulary" in stats["note"]
    assert "text" not in stats["top"][0]


def test_stats_cli(store):
    result = subprocess.run(
        [*STREAMPACK, "stats", str(store), "--top", "3"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "top 3 tokens cover" in result.stdout
    assert "'<|endoftext|>' (special)" in result.stdout
    assert "medical.txt" in result.stdout and "tokens/char" in result.stdout
    as_json = subprocess.run(
        [*STREAMPACK, "stats", str(store), "--top", "2", "--json"], capture_output=True, text=True
    )
    assert len(json.loads(as_json.stdout)["top"]) == 2
    missing = subprocess.run(
        [*STREAMPACK, "stats", str(store.parent / "nothing")], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("streampack: error:")
    assert "no such file or folder" in missing.stderr
    unfinished = store.parent / "unfinished"
    unfinished.mkdir()
    (unfinished / "build.json").write_text("{}")
    result = subprocess.run([*STREAMPACK, "stats", str(unfinished)], capture_output=True, text=True)
    assert result.returncode == 1 and "not a complete token store" in result.stderr
