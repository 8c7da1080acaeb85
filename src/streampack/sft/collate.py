"""Samples → padded batches, batches of similar lengths so that little of a batch is padding,
and blocks of several whole samples (packing).

Padding is found by position (each sample's length), never by token id: a pad id equal to EOS,
the built-in tokenizer's default, never masks a real EOS.
"""

import bisect
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ..errors import ConfigError
from ..pack import IGNORE_INDEX
from .encode import Sample


def _padded_length(longest: int, multiple_of: int | None) -> int:
    if multiple_of is None:
        return longest
    return -(-longest // multiple_of) * multiple_of


def pad_batch(
    samples: Sequence[Sample], pad_id: int, multiple_of: int | None = None
) -> dict[str, np.ndarray]:
    """int64 arrays (batch, longest, rounded up to `multiple_of`), padded on the right.

    Example: lengths 3 and 1, pad id P, multiple_of 4:
    input_ids [[a b c P] [d P P P]], attention_mask [[1 1 1 0] [1 0 0 0]].
    """
    if not samples:
        raise ConfigError("pad_batch needs at least one sample, found an empty batch")
    if multiple_of is not None and multiple_of < 1:
        raise ConfigError(f"multiple_of must be at least 1 (or None), found {multiple_of}")
    lengths = np.fromiter((len(s) for s in samples), dtype=np.int64, count=len(samples))
    width = _padded_length(int(lengths.max()), multiple_of)
    input_ids = np.full((len(samples), width), pad_id, dtype=np.int64)
    labels = np.full((len(samples), width), IGNORE_INDEX, dtype=np.int64)
    for row, sample in enumerate(samples):
        input_ids[row, : len(sample)] = sample.input_ids
        labels[row, : len(sample)] = sample.labels
    attention_mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def length_grouped_batches(
    samples: Iterable[Sample], batch_size: int, buffer_batches: int = 64, seed: int = 0
) -> Iterator[list[Sample]]:
    """Batches of similar lengths, in bounded memory; every sample is yielded exactly once.

    Up to `buffer_batches * batch_size` samples are held, sorted by length, cut into batches,
    and those batches yielded in an order shuffled with `seed` (so training does not see short
    batches first). Only the last batch of the stream may be smaller than `batch_size`.
    """
    if batch_size < 1 or buffer_batches < 1:
        raise ConfigError(
            f"batch_size and buffer_batches must be at least 1, found {batch_size} "
            f"and {buffer_batches}"
        )
    rng = np.random.default_rng(seed)
    for buffer in _buffers(samples, batch_size * buffer_batches):
        yield from _shuffled_batches(buffer, batch_size, rng)


def _buffers(samples: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    """`samples` in lists of `size` (the last may be shorter)."""
    buffer: list[Sample] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) == size:
            yield buffer
            buffer = []
    if buffer:
        yield buffer


def _shuffled_batches(buffer: list[Sample], batch_size: int, rng) -> Iterator[list[Sample]]:
    # A stable sort keeps equal lengths in arrival order, so the output depends only on the seed.
    ordered = sorted(buffer, key=len)
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    for index in rng.permutation(len(batches)):
        yield batches[index]


def padding_ratio(batches: Iterable[Sequence[Sample]], multiple_of: int | None = None) -> float:
    """Padding tokens over all tokens of the padded batches (0.0 for no padding)."""
    padded = total = 0
    for batch in batches:
        lengths = [len(sample) for sample in batch]
        if not lengths:
            continue
        width = _padded_length(max(lengths), multiple_of)
        total += width * len(lengths)
        padded += width * len(lengths) - sum(lengths)
    return padded / total if total else 0.0


def pack_samples(
    samples: Iterable[Sample], block_size: int, buffer_size: int = 512, seed: int = 0
) -> Iterator[list[Sample]]:
    """Whole samples packed into blocks of at most `block_size` tokens, in bounded memory.

    Up to `buffer_size` samples are held and placed longest first, each into the open block it
    fills best (the one with the least room that still takes it), a new block when none does;
    the blocks of a buffer are yielded in an order shuffled with `seed`. Every sample is in
    exactly one block; none is ever split.
    """
    if block_size < 1 or buffer_size < 1:
        raise ConfigError(
            f"block_size and buffer_size must be at least 1, found {block_size} and {buffer_size}"
        )
    rng = np.random.default_rng(seed)
    for buffer in _buffers(samples, buffer_size):
        longest = max(map(len, buffer))
        if longest > block_size:
            raise ConfigError(
                f"a sample of {longest} tokens does not fit a block of {block_size}: pack "
                f"with max_length at most the block size"
            )
        yield from _best_fit(buffer, block_size, rng)


def _best_fit(buffer: list[Sample], block_size: int, rng) -> Iterator[list[Sample]]:
    # Stable sort: equal lengths keep arrival order, so blocks depend only on input and seed.
    ordered = sorted(buffer, key=len, reverse=True)
    blocks: list[list[Sample]] = []
    rooms: list[tuple[int, int]] = []  # (room left, block index), sorted
    for sample in ordered:
        size = len(sample)
        at = bisect.bisect_left(rooms, (size, -1))
        if at < len(rooms):
            room, index = rooms.pop(at)
            blocks[index].append(sample)
        else:
            room, index = block_size, len(blocks)
            blocks.append([sample])
        bisect.insort(rooms, (room - size, index))
    for index in rng.permutation(len(blocks)):
        yield blocks[index]


def packed_batch(blocks: Sequence[Sequence[Sample]], block_size: int, pad_id: int) -> dict:
    """int64 arrays (blocks, block_size) of packed samples, with `position_ids`.

    Position ids restart at 0 with every sample, which is how Transformers' flash-attention
    and SDPA paths keep packed sequences apart; the first label of every sample is -100, so
    no label is learned across a boundary. The padding at the end of a block is masked in
    `attention_mask` and `labels` and counts its own positions from 0.

    Example, block size 8, samples [a b c] and [d e] (labels [-, b, c] and [-, e]):
    input_ids [a b c d e P P P], labels [- b c - e - - -], position_ids [0 1 2 0 1 0 1 2],
    attention_mask [1 1 1 1 1 0 0 0].
    """
    samples = [sample for block in blocks for sample in block]
    rows = len(blocks)
    sizes = np.fromiter(map(len, samples), dtype=np.int64, count=len(samples))
    row_of = np.repeat(np.arange(rows), [len(block) for block in blocks])
    starts = np.cumsum(sizes) - sizes  # of each sample in the samples laid end to end
    fill = np.bincount(row_of, weights=sizes, minlength=rows).astype(np.int64)
    # A sample's first column: where it starts end to end, less where its row's first one does.
    columns = starts - (np.cumsum(fill) - fill)[row_of]
    within = np.arange(int(sizes.sum())) - np.repeat(starts, sizes)
    token_rows = np.repeat(row_of, sizes)
    token_columns = np.repeat(columns, sizes) + within

    input_ids = np.full((rows, block_size), pad_id, dtype=np.int64)
    labels = np.full((rows, block_size), IGNORE_INDEX, dtype=np.int64)
    input_ids[token_rows, token_columns] = np.concatenate([s.input_ids for s in samples])
    flat_labels = np.concatenate([s.labels for s in samples])
    flat_labels[starts] = IGNORE_INDEX
    labels[token_rows, token_columns] = flat_labels
    grid = np.arange(block_size)[None, :]
    attention_mask = (grid < fill[:, None]).astype(np.int64)
    positions = grid - fill[:, None]  # the padding counts its own positions from 0
    positions[token_rows, token_columns] = within
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "position_ids": positions,
    }
