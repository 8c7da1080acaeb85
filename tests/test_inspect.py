"""`streampack inspect`: a block's documents, an SFT sample's prompt and trained runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streampack import pack, stream_sft
from streampack.errors import StoreError
from streampack.inspection import describe
from streampack.sft.store import write_sft_store

ENTRY_POINT = Path(sys.executable).with_name("streampack")
STREAMPACK = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "streampack"]


def run(*args):
    return subprocess.run([*STREAMPACK, *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def token_store(tmp_path_factory, qwen):
    folder = tmp_path_factory.mktemp("inspect")
    text = folder / "docs.txt"
    text.write_text("fever and cough\nshort\n" + "a long document about anemia " * 6 + "\n")
    pack(str(text), str(folder / "store"), tokenizer=qwen, block_size=16, remainder="pad")
    return folder / "store"


def test_block_pieces_follow_document_ends(token_store, qwen):
    first = describe(token_store, block=0, decode=True)
    kinds = [piece["kind"] for piece in first["pieces"]]
    assert kinds == ["document", "document", "document_start"]
    assert first["pieces"][0]["text"] == "fever and cough\n<|endoftext|>"
    assert first["pieces"][1]["text"] == "short\n<|endoftext|>"
    assert first["real_tokens"] == 16 and first["document_ends"] == 2
    last = describe(token_store, block=-1)
    assert last["pieces"][0]["kind"] == "document_end"
    assert (last["pieces"][-1]["kind"] == "padding") == (last["real_tokens"] < 16)
    assert sum(piece["tokens"] for piece in last["pieces"]) == 16
    assert "text" not in last["pieces"][0] and last["pieces"][0]["ids"][-1] == qwen.eos_id


def test_sft_sample_runs_and_preference_parts(tmp_path, qwen):
    data = tmp_path / "chat.jsonl"
    data.write_text(
        json.dumps(
            {"conversations": [{"from": "human", "value": "q?"}, {"from": "gpt", "value": "a."}]}
        )
        + "\n"
    )
    write_sft_store(stream_sft(str(data), qwen), tmp_path / "sft")
    shown = describe(tmp_path / "sft", sample=0, decode=True)
    assert [piece["kind"] for piece in shown["pieces"]] == ["prompt", "trained", "prompt"]
    assert shown["pieces"][1]["text"] == "a.<|im_end|>"
    assert shown["trained_tokens"] == shown["pieces"][1]["tokens"]
    with pytest.raises(StoreError, match="SFT store: choose a sample"):
        describe(tmp_path / "sft", block=0)

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q?", "chosen": "yes", "rejected": "no"}) + "\n")
    write_sft_store(stream_sft(str(pairs), qwen, preference=True), tmp_path / "dpo")
    shown = describe(tmp_path / "dpo", sample=0, decode=True)
    assert [piece["text"] for piece in shown["pieces"][1:]] == ["yes<|im_end|>", "no<|im_end|>"]


def test_cli_text_json_and_exit_codes(token_store):
    result = run("inspect", token_store, "--block", "0", "--decode")
    assert result.returncode == 0, result.stderr
    assert "block 0 of" in result.stdout and "fever and cough" in result.stdout
    as_json = json.loads(run("inspect", token_store, "--block", "1", "--json").stdout)
    assert as_json["block"] == 1 and as_json["pieces"]
    missing = run("inspect", token_store, "--block", "99")
    assert missing.returncode == 1 and "no block 99" in missing.stderr
    assert run("inspect", token_store, "--block", "0", "--sample", "0").returncode == 2
    assert run("inspect", token_store.parent / "nothing").returncode == 1
    assert "streampack inspect " in run("inspect", "--help").stdout
