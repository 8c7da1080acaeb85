"""Exact token layouts of the packer on tiny inputs."""

import numpy as np
import pytest

from streampack.config import PackConfig
from streampack.errors import ConfigError
from streampack.pack import Packer, block_samples, frame_documents, position_ids

E = 99  # EOS
P = 0  # pad


def encoded(*docs):
    ids = np.array([t for doc in docs for t in doc], dtype=np.uint32)
    offsets = np.cumsum([0, *map(len, docs)]).astype(np.int64)
    return ids, offsets


def test_frame_appends_one_eos_per_document():
    framed, offsets = frame_documents(*encoded([1, 2, 3], [4, 5, 6, 7], [8, 9]), (), (E,))
    assert framed.tolist() == [1, 2, 3, E, 4, 5, 6, 7, E, 8, 9, E]
    assert offsets.tolist() == [0, 4, 9, 12]


def test_frame_with_bos_prefix():
    framed, offsets = frame_documents(*encoded([1, 2], [3]), (7,), (E,))
    assert framed.tolist() == [7, 1, 2, E, 7, 3, E]
    assert offsets.tolist() == [0, 4, 7]


def test_block_of_eight_and_carried_tail():
    packer = Packer(PackConfig(block_size=8), eos_id=E, pad_id=P)
    batch = packer.add(*encoded([1, 2, 3], [4, 5, 6, 7], [8, 9]))
    assert batch.tokens.tolist() == [[1, 2, 3, E, 4, 5, 6, 7]]
    assert batch.doc_ends.tolist() == [4]
    assert packer.finish() is None
    assert (packer.tokens, packer.blocks, packer.dropped_tokens) == (12, 1, 4)


def test_tail_carries_across_batches_and_nothing_is_lost():
    packer = Packer(PackConfig(block_size=8), eos_id=E, pad_id=P)
    first = packer.add(*encoded([1, 2, 3], [4, 5, 6, 7], [8, 9]))
    second = packer.add(*encoded([10, 11, 12]))
    assert first.tokens.tolist() == [[1, 2, 3, E, 4, 5, 6, 7]]
    assert second.tokens.tolist() == [[E, 8, 9, E, 10, 11, 12, E]]
    assert second.first_block == 1
    assert second.doc_ends.tolist() == [9, 12, 16]
    assert packer.finish() is None
    assert packer.dropped_tokens == 0
    assert packer.tokens == packer.blocks * 8 - packer.padded_tokens + packer.dropped_tokens


def test_batch_too_small_for_a_block_is_carried():
    packer = Packer(PackConfig(block_size=8), eos_id=E, pad_id=P)
    assert packer.add(*encoded([1, 2])) is None
    batch = packer.add(*encoded([3, 4, 5, 6]))
    assert batch.tokens.tolist() == [[1, 2, E, 3, 4, 5, 6, E]]
    assert batch.doc_ends.tolist() == [3, 8]


def test_remainder_pad_masks_by_position_not_by_id():
    # pad id equal to EOS: the real EOS at the end of the tail must stay unmasked.
    packer = Packer(PackConfig(block_size=8, remainder="pad"), eos_id=E, pad_id=E)
    packer.add(*encoded([1, 2, 3], [4, 5, 6, 7], [8, 9]))
    tail = packer.finish()
    assert tail.tokens.tolist() == [[E, 8, 9, E, E, E, E, E]]
    assert tail.lengths.tolist() == [4]
    sample = block_samples(tail)
    assert sample["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0]]
    assert sample["labels"].tolist() == [[E, 8, 9, E, -100, -100, -100, -100]]
    assert (packer.padded_tokens, packer.dropped_tokens, packer.blocks) == (4, 0, 2)
    assert packer.tokens == packer.blocks * 8 - packer.padded_tokens + packer.dropped_tokens


def test_no_packing_truncates_and_pads_one_document_per_sample():
    packer = Packer(PackConfig(block_size=4, packing=False), eos_id=E, pad_id=P)
    batch = packer.add(*encoded([1, 2, 3, 4, 5], [6], [7, 8, 9]))
    assert batch.tokens.tolist() == [[1, 2, 3, 4], [6, E, P, P], [7, 8, 9, E]]
    assert batch.lengths.tolist() == [4, 2, 4]
    assert packer.truncated_tokens == 2  # 5 and the EOS of the first document
    assert packer.padded_tokens == 2
    labels = block_samples(batch)["labels"].tolist()
    assert labels == [[1, 2, 3, 4], [6, E, -100, -100], [7, 8, 9, E]]
    assert packer.finish() is None


def test_position_ids_restart_after_every_eos_and_at_block_start():
    positions = position_ids((2, 8), first_block=0, doc_ends=np.array([4, 9, 12]))
    assert positions.tolist() == [[0, 1, 2, 3, 0, 1, 2, 3], [0, 0, 1, 2, 0, 1, 2, 3]]


def test_position_ids_in_packed_samples():
    packer = Packer(PackConfig(block_size=8, position_ids="reset"), eos_id=E, pad_id=P)
    batch = packer.add(*encoded([1, 2, 3], [4, 5, 6, 7], [8, 9], [10, 11], [12]))
    sample = block_samples(batch, with_position_ids=True)
    assert sample["input_ids"].tolist() == [[1, 2, 3, E, 4, 5, 6, 7], [E, 8, 9, E, 10, 11, E, 12]]
    assert sample["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 3], [0, 0, 1, 2, 0, 1, 2, 0]]


def test_many_random_batches_keep_every_token_in_order():
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 50, size=rng.integers(1, 30)).tolist() for _ in range(400)]
    packer = Packer(PackConfig(block_size=16, remainder="pad"), eos_id=E, pad_id=P)
    out = []
    for start in range(0, len(docs), 37):
        batch = packer.add(*encoded(*docs[start : start + 37]))
        if batch is not None:
            out += [row[:n] for row, n in zip(batch.tokens.tolist(), batch.lengths, strict=True)]
    tail = packer.finish()
    out += [tail.tokens[0, : tail.lengths[0]].tolist()]
    flat = [t for row in out for t in row]
    assert flat == [t for doc in docs for t in [*doc, E]]
    assert packer.documents == 400


def test_settings_check_themselves():
    with pytest.raises(ConfigError, match="remainder must be one of drop, pad, found 'keep'"):
        PackConfig(remainder="keep")
    with pytest.raises(ConfigError, match="block_size"):
        PackConfig(block_size=0)
