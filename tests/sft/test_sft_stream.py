"""`stream_sft` on the real MedicalGPT SFT and preference files, and on small bad inputs."""

import gzip
import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from streampack import stream_sft
from streampack.errors import DataError
from streampack.report import Report
from streampack.sft import encode_conversation, encode_preference, parse_records

MEDICALGPT = Path(__file__).resolve().parents[2].parent / "shared/data/medicalgpt"
MAX_LENGTH = 1024


@pytest.fixture(scope="module")
def sft_files():
    files = sorted((MEDICALGPT / "sft").glob("*.jsonl"))
    if not files:
        pytest.skip(f"the real MedicalGPT SFT sample is not at {MEDICALGPT / 'sft'}")
    return files


def _reference(files, tokenizer, kind="sft"):
    """What the library gives record by record: samples (or pairs) and the records read."""
    report = Report()
    out, records = [], 0
    for path in files:
        numbered = [
            (line, orjson.loads(raw))
            for line, raw in enumerate(path.read_bytes().split(b"\n"), 1)
            if raw.strip()
        ]
        records += len(numbered)
        for _, item in parse_records(numbered, str(path), report, kind):
            if kind == "sft":
                encoded = encode_conversation(item, "chatml", tokenizer, MAX_LENGTH)
            else:
                encoded = encode_preference(item, "chatml", tokenizer, MAX_LENGTH)
            if encoded is not None:
                out.append(encoded)
    return out, records


def test_every_record_accounted_and_labels_exact(sft_files, qwen):
    stream = stream_sft([str(f) for f in sft_files], tokenizer=qwen, max_length=MAX_LENGTH)
    samples = list(stream.samples())
    report = stream.report
    expected, records = _reference(sft_files, qwen)
    assert report["records"] == records == 2300
    skipped = sum(entry["count"] for entry in report["skipped"].values())
    assert report["samples"] + skipped == report["records"]
    assert report["skipped"]["no_assistant_turn"]["first"] == [f"{sft_files[2]}:781"]
    assert len(samples) == len(expected) == report["samples"]
    for got, want in zip(samples, expected, strict=True):
        assert np.array_equal(got.input_ids, want.input_ids)
        assert np.array_equal(got.labels, want.labels)
    assert report["truncated_samples"] == sum(1 for s in expected if s.truncated_tokens)
    assert report["sft_fixes"]["merged_consecutive_turns"] == 17
    assert max(len(s) for s in samples) <= MAX_LENGTH


def test_grouping_yields_each_sample_once_with_less_padding(sft_files, qwen):
    sources = [str(f) for f in sft_files]
    in_order = stream_sft(sources, qwen, max_length=MAX_LENGTH, group_by_length=False)
    grouped = stream_sft(sources, qwen, max_length=MAX_LENGTH, group_by_length=True)
    plain_batches = list(in_order)
    grouped_batches = list(grouped)

    def rows(batches):
        return sorted(
            tuple(ids[mask == 1].tolist())
            for batch in batches
            for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
        )

    assert rows(grouped_batches) == rows(plain_batches)
    assert sum(len(b["input_ids"]) for b in grouped_batches) == grouped.report["samples"]
    for batch in grouped_batches:
        assert {key: value.dtype for key, value in batch.items()} == dict.fromkeys(
            ("input_ids", "labels", "attention_mask"), np.dtype(np.int64)
        )
        assert batch["input_ids"].shape == batch["labels"].shape
        assert len(batch["input_ids"]) <= 8
    assert grouped.report["padding_ratio"] < in_order.report["padding_ratio"] / 2


def test_preference_pairs_from_dpo(qwen):
    path = MEDICALGPT / "reward/dpo_zh_500.jsonl"
    if not path.is_file():
        pytest.skip(f"no {path}")
    stream = stream_sft(str(path), qwen, max_length=MAX_LENGTH, preference=True)
    pairs = list(stream)
    expected, records = _reference([path], qwen, kind="preference")
    assert stream.report["records"] == records == 500
    assert stream.report["pairs"] == len(pairs) == len(expected)
    for got, (prompt, chosen, rejected) in zip(pairs, expected, strict=True):
        assert got["prompt_ids"] == prompt.tolist()
        assert got["chosen_ids"] == chosen.tolist()
        assert got["rejected_ids"] == rejected.tolist()


def _write_bad_file(path: Path) -> None:
    good = {
        "conversations": [{"from": "human", "value": "fever?"}, {"from": "gpt", "value": "rest"}]
    }
    lines = [
        json.dumps(good),
        "{not json",
        "",
        json.dumps({"conversations": [{"from": "human", "value": "only a question"}]}),
        json.dumps({"instruction": "cough?", "output": "fluids"}),
    ]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))


def test_bad_records_counted_with_locations(tmp_path, qwen):
    path = tmp_path / "chat.jsonl.gz"
    _write_bad_file(path)
    array = tmp_path / "more.json"
    array.write_text(json.dumps([{"instruction": "a", "output": "b"}, 3]))
    stream = stream_sft(str(tmp_path), qwen, group_by_length=False, batch_size=2)
    batches = list(stream)
    report = stream.report
    assert report["records"] == 6
    assert report["samples"] == 3 == sum(len(b["input_ids"]) for b in batches)
    assert report["skipped"]["invalid_json"]["first"][0].startswith(f"{path}:2")
    assert report["skipped"]["no_assistant_turn"]["first"] == [f"{path}:4"]
    assert report["skipped"]["unrecognized_record"]["first"] == [f"{array}:2"]
    with pytest.raises(DataError, match=r"chat\.jsonl\.gz:2: "):
        list(stream_sft(str(path), qwen, on_error="raise"))


def test_no_sample_is_an_error(tmp_path, qwen):
    path = tmp_path / "empty.jsonl"
    path.write_text('{"conversations": []}\n')
    with pytest.raises(DataError, match="no samples made"):
        list(stream_sft(str(path), qwen))
