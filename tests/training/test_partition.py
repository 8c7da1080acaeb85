"""The layout and the equal-share rule, checked exhaustively on small cases (no data needed)."""

from collections import Counter

import numpy as np
import pytest

pytest.importorskip("torch")

from streampack.torch import partition

PAD = "pad"


def consumers(mode: str, batch: int, world: int, workers: int):
    ranks = world if mode == "split" else 1
    return [
        (rank, worker, partition.plan(mode, batch, rank, world, worker, workers))
        for rank in range(ranks)
        for worker in range(workers)
    ]


@pytest.mark.parametrize("mode", ["split", "dispatch", "shard"])
@pytest.mark.parametrize("even", ["drop", "pad"])
@pytest.mark.parametrize(
    ("total", "batch", "world", "workers"),
    [
        (5, 1, 2, 1),
        (5, 1, 2, 3),
        (5, 2, 2, 2),
        (0, 1, 2, 2),
        (1, 4, 2, 3),
        (37, 3, 2, 2),
        (64, 4, 4, 1),
        (65, 4, 4, 3),
        (7, 1, 1, 4),
    ],
)
def test_every_item_once_and_equal_shares(mode, even, total, batch, world, workers):
    yielded = Counter()
    per_rank = Counter()
    round_size = world * batch
    for rank, _, layout in consumers(mode, batch, world, workers):
        items = list(partition.share(iter(range(total)), layout, even, None, lambda: PAD))
        yielded.update(i for i in items if i != PAD)
        per_rank[rank] += len(items)
    kept = partition.even_count(total, round_size, even)
    assert yielded == Counter(range(min(kept, total)))
    if mode == "split":
        # Every rank yields the same number of samples, whole batches of each worker.
        assert set(per_rank.values()) <= {kept // world}
    else:
        assert sum(per_rank.values()) == kept


def test_split_layout_gives_back_the_global_order_through_round_robin_workers():
    # What a DataLoader does: worker w's batches come in turn; ranks take steps side by side.
    total, batch, world, workers = 50, 3, 2, 3
    streams = {
        (rank, worker): list(partition.share(iter(range(total)), layout, "drop", None, None))
        for rank, worker, layout in consumers("split", batch, world, workers)
    }
    order = []
    steps = partition.even_count(total, world * batch, "drop") // (world * batch)
    for step in range(steps):
        for rank in range(world):
            mine = streams[(rank, step % workers)]
            index = step // workers
            order += mine[index * batch : (index + 1) * batch]
    assert order == list(range(steps * world * batch))


def test_drop_reads_less_than_one_round_ahead():
    layout = partition.plan("split", 2, 0, 2, 0, 1)
    read = []

    def items():
        for i in range(100):
            read.append(i)
            yield i

    shared = partition.share(items(), layout, "drop", None, None)
    assert next(shared) == 0
    assert len(read) == 4  # the whole first round (2 ranks x 2) is read before it is yielded


def test_limit_cuts_or_pads_to_an_exact_count():
    layout = partition.plan("split", 1, 0, 1, 0, 1)
    ended = []
    out = list(
        partition.share(
            iter(range(10)),
            layout,
            "drop",
            6,
            lambda: PAD,
            0,
            lambda seen, cut: ended.append((seen, cut)),
        )
    )
    assert out == [0, 1, 2, 3, 4, 5] and ended == [(6, True)]
    out = list(partition.share(iter(range(3)), layout, "drop", 6, lambda: PAD))
    assert out == [0, 1, 2, PAD, PAD, PAD]


def test_skip_leaves_out_the_first_samples_of_a_rank():
    layout = partition.plan("split", 4, 1, 2, 0, 1)
    out = list(partition.share(iter(range(16)), layout, "drop", None, None, skip=3))
    assert out == [7, 12, 13, 14, 15]


@pytest.mark.parametrize("count", [1, 2, 5, 17, 1000, 4097])
def test_permutation_is_a_seeded_bijection(count):
    order = partition.permutation(count, seed=3, epoch=0)(np.arange(count))
    assert sorted(order.tolist()) == list(range(count))
    again = partition.permutation(count, seed=3, epoch=0)(np.arange(count))
    assert np.array_equal(order, again)
    if count > 16:
        other = partition.permutation(count, seed=3, epoch=1)(np.arange(count))
        assert not np.array_equal(order, other)
        assert not np.array_equal(order, np.arange(count))


def test_world_from_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert partition.world() == (1, 4)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(Exception, match="RANK and WORLD_SIZE must be integers"):
        partition.world()
