"""Who gets which sample: ranks, DataLoader workers and the equal-share rule, in one layout.

The global order of an epoch is cut into chunks of `chunk` samples, dealt to the consumers in
turn. With `chunk` equal to the DataLoader's batch size, each worker yields whole batches and
the loader's round-robin over its workers gives back the global order, so across all ranks the
first `s` steps consumed exactly the first `s * world_size * batch_size` samples: that count is
the whole resume state, whatever the number of workers.

Plain loop, streampack splits ranks (`consumers = world * workers`):

    chunk g ──► rank g % world, that rank's step g // world ──► worker step % workers

Under the `Trainer`, accelerate splits ranks itself; streampack then deals only between workers
(chunks of one batch when rank 0 loads for everyone, `dispatch_batches`; chunks of a whole round
when every rank loads and keeps its slice, `IterableDatasetShard`).

Equal shares: a round is one step of every rank (`world * batch_size` samples). `drop` yields
whole rounds only; `pad` completes the last round with padding samples that train nothing.
"""

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

EVEN_RULES = ("drop", "pad")


def world() -> tuple[int, int]:
    """(rank, world size) from `torch.distributed` when it is initialized, else from the
    `RANK` and `WORLD_SIZE` variables that `torchrun` sets, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        rank = int(os.environ.get("RANK", "0"))
        size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(
            f"RANK and WORLD_SIZE must be integers, found RANK={os.environ.get('RANK')!r} "
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}"
        ) from None
    return rank, size


def check_world(rank: int, size: int) -> None:
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"rank must be in [0, world_size), found rank {rank} of {size}")


def check_even(even: str) -> None:
    if even not in EVEN_RULES:
        raise ConfigError(
            f"even must be drop (whole rounds only) or pad (complete the last round with "
            f"padding samples), found {even!r}"
        )


@dataclass(frozen=True)
class Layout:
    """One consumer's share: chunks of `chunk` dealt in turn to `consumers`, this one `index`.

    `round` is the equal-share unit (world * batch size); `ranks` and `rank` say how a rank's own
    samples are numbered, for a resume that skips part of a round (`rank_position`).
    """

    chunk: int
    consumers: int
    index: int
    round: int
    ranks: int = 1

    def owns(self, j: int) -> bool:
        return (j // self.chunk) % self.consumers == self.index

    def rank_position(self, j: int) -> int:
        """Where sample j comes in its rank's own sequence (plain loop layout)."""
        k = j // self.chunk
        return (k // self.ranks) * self.chunk + j % self.chunk

    def own_chunks(self, start: int, stop: int) -> Iterator[range]:
        """The runs of j in [start, stop) this consumer owns, in order (for known counts)."""
        step = self.chunk * self.consumers
        first = (start // step) * step + self.index * self.chunk
        while first < stop:
            run = range(max(first, start), min(first + self.chunk, stop))
            if len(run):
                yield run
            first += step


def plan(
    mode: str,
    batch_size: int,
    rank: int,
    world_size: int,
    worker: int,
    workers: int,
) -> Layout:
    """The layout of one consumer.

    `mode` is `split` (streampack splits ranks), `dispatch` (the Trainer's rank 0 loads for all)
    or `shard` (the Trainer's every rank loads all and keeps its slice).
    """
    round_size = world_size * batch_size
    if mode == "split":
        return Layout(
            batch_size,
            world_size * workers,
            worker * world_size + rank,
            round_size,
            ranks=world_size,
        )
    if mode == "dispatch":
        return Layout(batch_size, workers, worker, round_size)
    if mode == "shard":
        return Layout(round_size, workers, worker, round_size)
    raise ValueError(f"unknown layout mode {mode!r}")


def even_count(total: int, round_size: int, even: str) -> int:
    """Samples of an epoch under the equal-share rule: whole rounds (drop) or rounded up (pad)."""
    if even == "drop":
        return total // round_size * round_size
    return -(-total // round_size) * round_size


def share(
    items: Iterable,
    layout: Layout,
    even: str,
    limit: int | None,
    padding: Callable[[], object],
    skip: int = 0,
    on_end: Callable[[int, bool], None] | None = None,
) -> Iterator:
    """This consumer's items of a sequence whose length is found only at its end.

    `items` are the samples from position 0 of the (resumed) sequence on. Under `drop` an item
    is yielded only once its round is complete, so the reader looks ahead by less than one round;
    the final partial round is left out. Under `pad` it is completed with `padding()`. With
    `limit` (a multiple of the round) the sequence is cut or padded to exactly that many.
    `skip` leaves out the first items of this consumer's rank (a resume inside a round).
    `on_end(seen, cut)` gets the number of items read and whether `limit` cut the sequence.
    """
    held: list = []
    round_end = layout.round
    seen = 0
    cut = False

    def keep(j: int) -> bool:
        return layout.owns(j) and (not skip or layout.rank_position(j) >= skip)

    for item in items:
        j = seen
        if limit is not None and j >= limit:
            cut = True
            break
        seen += 1
        if keep(j):
            held.append(item)
        if seen == round_end:
            yield from held
            held = []
            round_end += layout.round
    if on_end is not None:
        on_end(seen, cut)
    if limit is not None and seen < limit:
        stop = limit
    elif even == "pad" and seen > round_end - layout.round:
        stop = round_end
    else:
        return
    yield from held
    for j in range(seen, stop):
        if keep(j):
            yield padding()


def permutation(count: int, seed: int, epoch: int) -> Callable[[np.ndarray], np.ndarray]:
    """A seeded pseudo-random permutation of range(count), evaluated per index.

    A balanced Feistel network on the smallest even power of two at or above `count`, with
    cycle-walking back into range: no table is built, so it costs no memory, every process
    computes the same order from (seed, epoch), and any position is reached in O(1).
    """
    bits = max(2, (max(count - 1, 1)).bit_length())
    bits += bits % 2
    half = bits // 2
    mask = np.uint64((1 << half) - 1)
    keys = [
        _mix(np.uint64((seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + r) % (1 << 64)))
        for r in range(6)
    ]

    def encrypt(x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(half), x & mask
        for key in keys:
            left, right = right, left ^ (_mix(right ^ key) & mask)
        return (left << np.uint64(half)) | right

    def apply(indices: np.ndarray) -> np.ndarray:
        out = encrypt(np.asarray(indices, dtype=np.uint64))
        outside = out >= count
        while outside.any():
            out[outside] = encrypt(out[outside])
            outside = out >= count
        return out.astype(np.int64)

    return apply


def _mix(x):
    """splitmix64's finalizer: a cheap, well-mixed 64-bit hash (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
