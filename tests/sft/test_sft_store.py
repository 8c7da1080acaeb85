"""The SFT store: round trip against the stream, preference streams, overwrite, and the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streampack import SFTStore, stream_sft
from streampack.errors import StoreError
from streampack.pack import IGNORE_INDEX
from streampack.sft.store import write_sft_store
from streampack.store import verify_store

MEDICALGPT = Path(__file__).resolve().parents[2].parent / "shared/data/medicalgpt"
ENTRY_POINT = Path(sys.executable).with_name("streampack")
STREAMPACK = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "streampack"]


def run(*args):
    return subprocess.run(
        [*STREAMPACK, *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def sft_dir():
    folder = MEDICALGPT / "sft"
    if not folder.is_dir():
        pytest.skip(f"the real MedicalGPT SFT sample is not at {folder}")
    return folder


def test_round_trip_equals_stream(sft_dir, qwen, tmp_path):
    stream = stream_sft(str(sft_dir), qwen, max_length=512, group_by_length=False)
    report = write_sft_store(stream, tmp_path / "store")
    store = SFTStore(tmp_path / "store")
    samples = list(stream_sft(str(sft_dir), qwen, max_length=512).samples())
    assert len(store) == len(samples) == report["samples"]
    for index in (0, 1, 500, len(samples) - 1):
        item, sample = store[index], samples[index]
        assert np.array_equal(item["input_ids"], sample.input_ids)
        assert np.array_equal(item["labels"], sample.labels)
        assert item["attention_mask"].tolist() == [1] * len(sample)
        assert item["input_ids"].dtype == item["labels"].dtype == np.int64
    assert all(np.array_equal(store[i]["labels"], s.labels) for i, s in enumerate(samples))
    meta = store.metadata
    assert meta["format"] == "streampack-sft-store"
    assert meta["dtype"] == "uint32"  # Qwen's 151,665 ids do not fit uint16
    assert meta["template"] == "chatml" and meta["max_length"] == 512
    assert meta["tokenizer"]["vocab_hash"] == qwen.vocab_hash
    assert meta["samples"] == len(samples) and meta["tokens"] == sum(map(len, samples))
    assert json.loads((tmp_path / "store/report.json").read_text())["samples"] == len(samples)
    mask = np.fromfile(tmp_path / "store/shard-00000.mask", dtype=np.uint8)
    assert int(mask.sum()) == report["trained_tokens"]
    assert (store[-1]["labels"] != IGNORE_INDEX).any()


def test_overwrite_replaces_and_refuses_without(tmp_path, qwen):
    source = tmp_path / "chat.jsonl"
    source.write_text(json.dumps({"instruction": "fever?", "output": "rest"}) + "\n")
    target = tmp_path / "store"
    write_sft_store(stream_sft(str(source), qwen), target)
    with pytest.raises(StoreError, match="--overwrite"):
        write_sft_store(stream_sft(str(source), qwen), target)
    source.write_text(source.read_text() * 3)
    write_sft_store(stream_sft(str(source), qwen), target, overwrite=True)
    assert len(SFTStore(target)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.jsonl", "store"]
    with pytest.raises(StoreError, match="not an SFT store"):
        (target / "metadata.json").write_text(json.dumps({"format": "streampack-store"}))
        SFTStore(target)


def test_preference_store(qwen, tmp_path):
    path = MEDICALGPT / "reward/dpo_zh_500.jsonl"
    if not path.is_file():
        pytest.skip(f"no {path}")
    stream = stream_sft(str(path), qwen, max_length=1024, preference=True)
    write_sft_store(stream, tmp_path / "dpo")
    store = SFTStore(tmp_path / "dpo")
    pairs = list(stream)
    assert len(store) == len(pairs) == 500
    assert verify_store(tmp_path / "dpo") == []
    for index in (0, 123, 499):
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            assert store[index][key].tolist() == pairs[index][key]


def test_cli_json_report_and_bad_input(sft_dir, tmp_path):
    result = run("sft", sft_dir, "-o", tmp_path / "store", "--max-length", "512", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    skipped = sum(entry["count"] for entry in report["skipped"].values())
    assert report["samples"] + skipped == report["records"] == 2300
    assert len(SFTStore(tmp_path / "store")) == report["samples"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "fever?", "output": "rest"}\n{oops\n')
    result = run("sft", bad, "-o", tmp_path / "bad-store", "--on-error", "raise")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{bad}:2: malformed JSON" in result.stderr
    assert not (tmp_path / "bad-store" / "metadata.json").exists()
    assert run("sft", "--help").stdout.count("streampack sft ") >= 2
    assert run("sft", bad, "-o", tmp_path / "x", "--max-length", "1").returncode == 2

    result = run("sft", bad, "-o", tmp_path / "fixed", "--format", "sharegpt", "--json")
    assert result.returncode == 1, "no record is sharegpt: nothing to write"
    assert "unrecognized_record" in result.stderr or "unrecognized_record" in result.stdout


def test_verify_checks_an_sft_store(sft_dir, qwen, tmp_path):
    write_sft_store(stream_sft(sft_dir, qwen, max_length=512), tmp_path / "store")
    assert verify_store(tmp_path / "store") == []
    mask = tmp_path / "store" / "shard-00000.mask"
    data = bytearray(mask.read_bytes())
    data[5] ^= 1
    mask.write_bytes(bytes(data))
    problems = verify_store(tmp_path / "store")
    assert any("shard-00000.mask: crc32 checksum differs" in p for p in problems)
    tokens = tmp_path / "store" / "shard-00000.tokens"
    tokens.write_bytes(tokens.read_bytes()[:-4])
    assert "ids and" in verify_store(tmp_path / "store")[0]
