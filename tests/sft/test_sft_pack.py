"""SFT packing: whole samples per block, position ids per sample, no label across a boundary."""

import random
from pathlib import Path

import numpy as np
import pytest

from streampack import stream_sft
from streampack.errors import ConfigError
from streampack.sft import Sample
from streampack.sft.collate import pack_samples, packed_batch

MEDICALGPT = Path(__file__).resolve().parents[2].parent / "shared/data/medicalgpt"
P = 0  # pad id
N = -100


def _sample(ids, labels):
    ids = np.asarray(ids, dtype=np.int64)
    return Sample(ids, np.asarray(labels, dtype=np.int64), np.ones_like(ids))


def test_exact_packed_layout():
    a = _sample([11, 12, 13], [N, 12, 13])
    b = _sample([21, 22], [N, 22])
    batch = packed_batch([[a, b]], block_size=8, pad_id=P)
    assert batch["input_ids"].tolist() == [[11, 12, 13, 21, 22, P, P, P]]
    assert batch["labels"].tolist() == [[N, 12, 13, N, 22, N, N, N]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0, 0]]


def test_a_trained_first_token_is_still_not_learned_across_the_boundary():
    a = _sample([1, 2], [N, 2])
    b = _sample([3, 4], [3, 4])  # a label on its first token would be predicted from a's end
    batch = packed_batch([[a, b]], block_size=4, pad_id=P)
    assert batch["labels"].tolist() == [[N, 2, N, 4]]


def test_every_sample_once_and_no_block_over_size():
    rng = random.Random(0)
    samples = []
    for index in range(1000):
        length = rng.randint(1, 100)
        samples.append(_sample([index] * length, [N] * length))
    blocks = list(pack_samples(iter(samples), block_size=128, buffer_size=100, seed=3))
    seen = sorted(int(sample.input_ids[0]) for block in blocks for sample in block)
    assert seen == list(range(1000))
    assert all(sum(len(s) for s in block) <= 128 for block in blocks)
    fill = sum(len(s) for s in samples) / (128 * len(blocks))
    assert fill > 0.9
    again = list(pack_samples(iter(samples), block_size=128, buffer_size=100, seed=3))
    assert [[id(s) for s in block] for block in again] == [
        [id(s) for s in block] for block in blocks
    ]


def test_a_sample_longer_than_the_block_is_a_config_error():
    with pytest.raises(ConfigError, match="does not fit a block of 4"):
        list(pack_samples([_sample([1] * 5, [N] * 5)], block_size=4))
    with pytest.raises(ConfigError, match="pack fills rows of max_length"):
        stream_sft("x.jsonl", max_length=None, pack=True)


def test_packed_stream_of_the_real_files_keeps_every_token(qwen):
    files = sorted((MEDICALGPT / "sft").glob("*.jsonl"))
    if not files:
        pytest.skip(f"the real MedicalGPT SFT sample is not at {MEDICALGPT / 'sft'}")
    sources = [str(f) for f in files]
    plain = stream_sft(sources, qwen, max_length=512, group_by_length=False)
    rows = sorted(tuple(s.input_ids.tolist()) for s in plain.samples())
    packed = stream_sft(sources, qwen, max_length=512, pack=True, batch_size=4)
    found = []
    for batch in packed:
        assert batch["input_ids"].shape[1] == 512
        for ids, positions, mask in zip(
            batch["input_ids"], batch["position_ids"], batch["attention_mask"], strict=True
        ):
            starts = np.flatnonzero((positions == 0) & (mask == 1))
            ends = [*starts[1:], int(mask.sum())]
            found += [tuple(ids[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]
    assert sorted(found) == rows
    report = packed.report
    assert report["blocks"] * 512 - report["padded_tokens"] == report["tokens"]
    assert report["padding_ratio"] < 0.1


def test_an_sft_store_packs_like_the_stream(qwen, tmp_path):
    from streampack.sft.store import SFTStore, write_sft_store

    files = sorted((MEDICALGPT / "sft").glob("*.jsonl"))
    if not files:
        pytest.skip(f"the real MedicalGPT SFT sample is not at {MEDICALGPT / 'sft'}")
    sources = [str(files[1])]
    write_sft_store(stream_sft(sources, qwen, max_length=256), tmp_path / "store")
    store = SFTStore(tmp_path / "store")
    from_store = list(store.packed_batches(256, batch_size=4, buffer_size=64))
    streamed = list(
        stream_sft(sources, qwen, max_length=256, pack=True, batch_size=4, buffer_batches=16)
    )
    assert len(from_store) == len(streamed)
    for got, want in zip(from_store, streamed, strict=True):
        for key in want:
            assert np.array_equal(got[key], want[key]), key
