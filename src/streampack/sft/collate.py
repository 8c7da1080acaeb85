"""Samples → padded batches, and batches of similar lengths so that little of a batch is padding.

Padding is found by position (each sample's length), never by token id: a pad id equal to EOS,
the built-in tokenizer's default, never masks a real EOS.
"""

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
    capacity = batch_size * buffer_batches
    buffer: list[Sample] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) == capacity:
            yield from _shuffled_batches(buffer, batch_size, rng)
            buffer = []
    if buffer:
        yield from _shuffled_batches(buffer, batch_size, rng)


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
