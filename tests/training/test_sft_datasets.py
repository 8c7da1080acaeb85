"""SFT datasets: map-style over an SFT store, iterable over stream_sft, the padding collator."""

import json
from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from streampack import stream_sft  # noqa: E402
from streampack.sft.store import write_sft_store  # noqa: E402
from streampack.torch import DataLoader, SFTCollator, SFTStoreDataset, SFTStreamDataset  # noqa: E402


@pytest.fixture
def chats(tmp_path):
    path = tmp_path / "chat.jsonl"
    rows = [
        {
            "conversations": [
                {"from": "human", "value": f"question {i} " + "fever " * (i % 5)},
                {"from": "gpt", "value": f"answer {i}"},
            ]
        }
        for i in range(23)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_store_dataset_batches_with_the_collator(chats, qwen, tmp_path):
    write_sft_store(stream_sft(str(chats), qwen), tmp_path / "store")
    dataset = SFTStoreDataset(tmp_path / "store")
    assert len(dataset) == 23
    loader = DataLoader(dataset, batch_size=5, collate_fn=SFTCollator(qwen.pad_id, 8))
    batches = list(loader)
    assert len(batches) == 5
    first = batches[0]
    assert first["input_ids"].shape[1] % 8 == 0
    lengths = first["attention_mask"].sum(dim=1)
    for row in range(5):
        sample = dataset[row]
        assert int(lengths[row]) == len(sample["input_ids"])
        assert torch.equal(first["labels"][row, : lengths[row]], sample["labels"])
        assert bool((first["labels"][row, lengths[row] :] == -100).all())


@pytest.mark.parametrize("even", ["drop", "pad"])
def test_stream_dataset_partitions_and_resumes(chats, qwen, even):
    stream = stream_sft(str(chats), qwen)
    expected = [s.input_ids.tobytes() for s in stream.samples()]
    seen, steps = Counter(), []
    for rank in range(2):
        dataset = SFTStreamDataset(stream, even=even, rank=rank, world_size=2)
        loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=SFTCollator(0))
        batches = list(loader)
        steps.append(len(batches))
        for b in batches:
            for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True):
                if mask.sum():
                    seen[ids[: int(mask.sum())].numpy().tobytes()] += 1
    assert steps[0] == steps[1] == (3 if even == "drop" else 4)
    assert seen == Counter(expected[:18] if even == "drop" else expected)

    dataset = SFTStreamDataset(stream, batch_size=3)
    iterator = iter(dataset)
    for _ in range(6):
        next(iterator)
    resumed = SFTStreamDataset(stream, batch_size=3)
    resumed.load_state_dict(dataset.state_dict())
    assert np.array_equal(next(iter(resumed))["input_ids"].numpy(), stream_sample(stream, 6))


def stream_sample(stream, index):
    return next(s for i, s in enumerate(stream.samples()) if i == index).input_ids
