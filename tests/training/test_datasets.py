"""streampack.torch datasets: the same blocks as a stream, exact partitions, exact resume."""

import hashlib
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import streampack  # noqa: E402
from streampack import ConfigError  # noqa: E402
from streampack.torch import (  # noqa: E402
    DataLoader,
    StoreDataset,
    StoreIterableDataset,
    StreamDataset,
    estimate_blocks,
)


def digest(row) -> str:
    return hashlib.sha1(np.asarray(row).tobytes()).hexdigest()


@pytest.fixture
def corpus(tmp_path):
    """Three files of distinct lines, small read batches so that a file holds several."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for f, lines in enumerate((90, 7, 400)):
        text = "".join(
            f"file {f} line {i}: " + "患者 发热 " * (i % 9 + 1) + "\n" for i in range(lines)
        )
        (folder / f"{f}.txt").write_text(text, encoding="utf-8")
    return folder


def make_stream(source, qwen, **settings):
    settings = {"block_size": 32, "batch_bytes": 2048, **settings}
    return streampack.stream(source, tokenizer=qwen, **settings)


def test_import_streampack_does_not_import_torch():
    code = "import sys, streampack; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_one_process_yields_the_stream_blocks_as_tensors(corpus, qwen):
    stream = make_stream(corpus, qwen, position_ids="reset", remainder="pad")
    expected = list(stream)
    got = list(StreamDataset(stream, rank=0, world_size=1))
    assert len(got) == len(expected)
    for sample, block in zip(got, expected, strict=True):
        assert set(sample) == set(block)
        for key in block:
            assert sample[key].dtype == torch.int64
            assert np.array_equal(sample[key].numpy(), block[key])


@pytest.mark.parametrize("even", ["drop", "pad"])
def test_one_file_five_rows_on_two_ranks_with_more_workers_than_files(tmp_path, qwen, even):
    source = tmp_path / "five.txt"
    source.write_text("".join(f"row {i}\n" for i in range(5)))
    stream = make_stream(source, qwen, packing=False, block_size=8)
    rows = [digest(b["input_ids"]) for b in stream]
    assert len(rows) == 5
    seen, batches = Counter(), []
    for rank in range(2):
        dataset = StreamDataset(stream, even=even, rank=rank, world_size=2)
        loader = DataLoader(dataset, batch_size=1, num_workers=3)
        mine = list(loader)
        batches.append(len(mine))
        seen.update(digest(b["input_ids"][0]) for b in mine if b["attention_mask"].sum())
    # drop: 2 whole rounds of 2 blocks, 4 of the 5 rows; pad: 3 rounds, the sixth slot padding.
    assert batches == ([2, 2] if even == "drop" else [3, 3])
    assert seen == Counter(rows[:4] if even == "drop" else rows)


@pytest.mark.parametrize(("world", "workers", "batch"), [(2, 2, 4), (3, 1, 2), (1, 3, 5)])
def test_ranks_and_workers_partition_the_stream(corpus, qwen, world, workers, batch):
    stream = make_stream(corpus, qwen)
    expected = [digest(b["input_ids"]) for b in stream]
    steps = []
    per_rank = []
    for rank in range(world):
        dataset = StreamDataset(stream, rank=rank, world_size=world)
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers)
        mine = [[digest(row) for row in b["input_ids"]] for b in loader]
        per_rank.append(mine)
        steps.append(len(mine))
    assert len(set(steps)) == 1
    order = [d for step in zip(*per_rank, strict=True) for batch_ in step for d in batch_]
    # The ranks' steps side by side give back the single-process order, less the last round.
    kept = len(expected) // (world * batch) * (world * batch)
    assert order == expected[:kept]


@pytest.mark.parametrize(("save_workers", "resume_workers"), [(0, 0), (2, 0), (0, 2), (2, 3)])
def test_resume_gives_the_next_batch_and_rereads_one_read_batch(
    corpus, qwen, save_workers, resume_workers
):
    stream = make_stream(corpus, qwen, position_ids="reset")
    expected = list(stream)
    dataset = StreamDataset(stream, batch_size=4)
    iterator = iter(DataLoader(dataset, batch_size=4, num_workers=save_workers))
    for _ in range(50):
        next(iterator)
    state = dataset.state_dict()
    del iterator
    assert state["taken"] == 200
    position = state["position"]
    assert position is not None and position["token"] <= 200 * 32
    assert position["path"].endswith("2.txt") and position["record"] > 0

    resumed = StreamDataset(stream, batch_size=4)
    resumed.load_state_dict(state)
    batches = list(DataLoader(resumed, batch_size=4, num_workers=resume_workers))
    rest = np.stack([b["input_ids"] for b in expected[200 : 200 + 4 * len(batches)]])
    assert np.array_equal(torch.cat([b["input_ids"] for b in batches]).numpy(), rest)
    positions = np.stack([b["position_ids"] for b in expected[200:204]])
    assert np.array_equal(batches[0]["position_ids"].numpy(), positions)
    if resume_workers == 0:
        # Only the current file was read, and tokenized from the position's document on.
        assert [entry["path"] for entry in resumed.report["files"]] == [position["path"]]
        assert resumed.report["documents"] == 400 - position["record"]


def test_resume_on_another_world_size_at_a_whole_round(corpus, qwen):
    stream = make_stream(corpus, qwen)
    expected = [digest(b["input_ids"]) for b in stream]
    dataset = StreamDataset(stream, batch_size=2, rank=0, world_size=2)
    iterator = iter(dataset)
    for _ in range(8):
        next(iterator)
    state = dataset.state_dict()
    # 8 samples on each of 2 ranks: the first 16 of the order, 4 steps of 4 on 1 rank.
    alone = StreamDataset(stream, batch_size=2, rank=0, world_size=1)
    alone.load_state_dict(state)
    assert digest(next(iter(alone))["input_ids"]) == expected[16]
    three = StreamDataset(stream, batch_size=2, rank=0, world_size=3)
    with pytest.raises(ConfigError, match="whole steps"):
        three.load_state_dict(state)


def test_state_without_the_counting_loader_is_refused(corpus, qwen):
    dataset = StreamDataset(make_stream(corpus, qwen), batch_size=2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1)
    next(iter(loader))
    with pytest.raises(ConfigError, match=r"streampack\.torch\.DataLoader"):
        dataset.state_dict()


def test_changed_settings_are_refused_on_resume(corpus, qwen):
    dataset = StreamDataset(make_stream(corpus, qwen), batch_size=2)
    next(iter(dataset))
    state = dataset.state_dict()
    with pytest.raises(ConfigError, match="pack"):
        StreamDataset(make_stream(corpus, qwen, block_size=16), batch_size=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="batch_size 2"):
        StreamDataset(make_stream(corpus, qwen), batch_size=3).load_state_dict(state)


def test_length_gives_len_and_cuts_or_pads_each_epoch(corpus, qwen):
    stream = make_stream(corpus, qwen)
    blocks = len(list(stream))
    with pytest.raises(TypeError, match="max_steps"):
        len(StreamDataset(stream))
    exact = StreamDataset(stream, batch_size=4, length=blocks)
    assert len(exact) == blocks // 4 * 4 == len(list(exact))
    short = StreamDataset(stream, batch_size=4, length=blocks - 10)
    assert len(list(short)) == len(short) == (blocks - 10) // 4 * 4
    long = StreamDataset(stream, batch_size=4, length=blocks + 9, even="pad")
    samples = list(long)
    assert len(samples) == len(long) == -(-(blocks + 9) // 4) * 4
    assert int(samples[-1]["attention_mask"].sum()) == 0
    assert int((samples[-1]["labels"] != -100).sum()) == 0
    estimate = estimate_blocks(stream, every=1)
    assert abs(estimate - blocks) <= 2


@pytest.fixture
def store(corpus, qwen, tmp_path):
    path = tmp_path / "store"
    streampack.pack(corpus, path, tokenizer=qwen, block_size=32, remainder="pad")
    return streampack.TokenStore(path)


def test_store_map_dataset_and_its_hf_view_share_the_store_memory(store):
    dataset = StoreDataset(store)
    assert len(dataset) == len(store)
    last = dataset[len(dataset) - 1]
    assert np.array_equal(last["labels"].numpy(), store[len(store) - 1]["labels"])
    hf = dataset.to_hf()
    assert len(hf) == len(store)
    row = hf[len(store) - 1]
    for key in ("input_ids", "labels", "attention_mask"):
        assert np.array_equal(np.asarray(row[key]), store[len(store) - 1][key])
    # The Arrow column is a view of the memory-mapped shard, not a copy.
    chunk = hf.data.column("input_ids").chunk(0).values
    assert chunk.buffers()[1].address == store._tokens(0).ctypes.data


@pytest.mark.parametrize(
    ("world", "workers", "even"), [(2, 2, "drop"), (2, 3, "pad"), (3, 1, "pad")]
)
def test_store_shuffle_partitions_each_epoch(store, world, workers, even):
    count = len(store)
    for epoch in (0, 1):
        seen = Counter()
        steps = []
        for rank in range(world):
            dataset = StoreIterableDataset(store, seed=7, even=even, rank=rank, world_size=world)
            dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=3, num_workers=workers)
            batches = list(loader)
            steps.append(len(batches))
            for b in batches:
                seen.update(
                    digest(r)
                    for r, m in zip(b["input_ids"], b["attention_mask"], strict=True)
                    if m.sum()
                )
        assert len(set(steps)) == 1
        order = StoreIterableDataset(store, seed=7).order(epoch)
        kept = partition_kept(count, world * 3, even)
        assert seen == Counter(digest(store[int(i)]["input_ids"]) for i in order[:kept])
    assert not np.array_equal(dataset.order(0), dataset.order(1))


def partition_kept(count, round_size, even):
    return count // round_size * round_size if even == "drop" else count


def test_store_resume_is_exact_and_reads_nothing_before(store):
    dataset = StoreIterableDataset(store, seed=3, batch_size=2)
    dataset.set_epoch(1)
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    iterator = iter(loader)
    taken = [next(iterator) for _ in range(5)]
    expected = next(iterator)
    state = dataset.state_dict()
    assert state["taken"] == 12 and state["epoch"] == 1
    resumed = StoreIterableDataset(store, seed=3, batch_size=2)
    resumed.load_state_dict({**state, "taken": 10})
    first = next(iter(DataLoader(resumed, batch_size=2, num_workers=0)))
    assert torch.equal(first["input_ids"], expected["input_ids"])
    assert len(taken) == 5


def test_to_hf_iterable_yields_the_samples(corpus, qwen):
    stream = make_stream(corpus, qwen)
    hf = StreamDataset(stream).to_hf_iterable()
    rows = list(hf)
    assert [digest(np.asarray(r["input_ids"], np.int64)) for r in rows] == [
        digest(b["input_ids"]) for b in stream
    ]
