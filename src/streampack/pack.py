"""Packing: documents (flat ids + offsets) become fixed-size blocks, the remainder carried.

Every step is a few numpy operations per batch; no per-document Python objects are made, which is
what keeps packing far below the tokenizer's cost.
"""

from dataclasses import dataclass

import numpy as np

from .config import PackConfig

IGNORE_INDEX = -100


@dataclass(slots=True)
class BlockBatch:
    """Consecutive blocks of the output, in order.

    Attributes:
        tokens: uint32 (blocks, block_size); positions past `lengths` hold the pad id.
        lengths: int32 (blocks,), the real tokens in each block (block_size but for padding).
        first_block: index of `tokens[0]` in the whole output.
        doc_ends: int64, the end (exclusive) of every document that ends inside these blocks, as a
            position in the output's token stream (block i starts at i * block_size).
    """

    tokens: np.ndarray
    lengths: np.ndarray
    first_block: int
    doc_ends: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


def frame_documents(
    ids: np.ndarray, offsets: np.ndarray, prefix: tuple[int, ...], suffix: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Put `prefix` before and `suffix` after every document: flat ids and offsets again.

    Example: ids [1 2 3 4 5 6 7 8 9], offsets [0 3 7 9], prefix (), suffix (E,)
    give [1 2 3 E 4 5 6 7 E 8 9 E] with offsets [0 4 9 12].
    """
    extra = len(prefix) + len(suffix)
    count = len(offsets) - 1
    framed_offsets = offsets + np.arange(count + 1, dtype=np.int64) * extra
    framed = np.empty(int(framed_offsets[-1]), dtype=np.uint32)
    is_text = np.ones(len(framed), dtype=bool)
    starts, ends = framed_offsets[:-1], framed_offsets[1:]
    for j in range(len(prefix)):
        is_text[starts + j] = False
    for j in range(len(suffix)):
        is_text[ends - len(suffix) + j] = False
    framed[is_text] = ids
    for j, token in enumerate(prefix):
        framed[starts + j] = token
    for j, token in enumerate(suffix):
        framed[ends - len(suffix) + j] = token
    return framed, framed_offsets


class Packer:
    """Turns encoded batches into block batches; call `finish` once at the end for the tail.

    Counts (all in tokens unless named otherwise) are kept as attributes for the report:
    `documents`, `tokens` (document tokens including the EOS each), `blocks`, `dropped_tokens`
    (the final tail under `remainder=drop`), `padded_tokens`, `truncated_tokens` (no packing).
    """

    def __init__(
        self,
        config: PackConfig,
        eos_id: int,
        pad_id: int,
        prefix: tuple[int, ...] = (),
        suffix: tuple[int, ...] = (),
    ) -> None:
        self.config = config
        self.pad_id = pad_id
        self.prefix = tuple(prefix)
        self.suffix = (*suffix, eos_id)
        self.documents = 0
        self.tokens = 0
        self.blocks = 0
        self.dropped_tokens = 0
        self.padded_tokens = 0
        self.truncated_tokens = 0
        self._carry = np.empty(0, dtype=np.uint32)
        self._pending_ends = np.empty(0, dtype=np.int64)
        self._finished = False
        self._skip = 0

    @property
    def position(self) -> int:
        """Where the next document's first token lands in the output (block i starts at
        i * block_size); without packing every document starts a block."""
        return self.blocks * self.config.block_size + len(self._carry) - self._skip

    def resume(self, first_block: int, skip: int) -> None:
        """Start a pass part-way: the next documents fill the output from `first_block * block_size
        - skip` on, and their first `skip` tokens (without packing, `skip // block_size`
        documents) belong to blocks before `first_block`, so they are dropped."""
        self.blocks = first_block
        self._skip = skip

    def _drop_skipped(self, framed: np.ndarray, framed_offsets: np.ndarray):
        """The framed batch less the tokens (documents, without packing) still to skip."""
        if self.config.packing:
            cut = min(self._skip, len(framed))
            self._skip -= cut
            ends = framed_offsets[1:] - cut
            # Documents that end before the cut end in blocks that were skipped.
            kept = np.concatenate((np.zeros(1, np.int64), ends[ends > 0]))
            return framed[cut:], kept
        size = self.config.block_size
        count = min(self._skip // size, len(framed_offsets) - 1)
        self._skip -= count * size
        start = framed_offsets[count]
        return framed[start:], framed_offsets[count:] - start

    def state(self) -> dict:
        """The counts and the carried tail after the latest batch: a resumed run starts here."""
        return {
            **{name: getattr(self, name) for name in _COUNTS},
            "carry": self._carry.copy(),
            "pending_ends": self._pending_ends.copy(),
        }

    def load_state(self, state: dict) -> None:
        for name in _COUNTS:
            setattr(self, name, int(state[name]))
        self._carry = np.asarray(state["carry"], dtype=np.uint32)
        self._pending_ends = np.asarray(state["pending_ends"], dtype=np.int64)

    def add(self, ids: np.ndarray, offsets: np.ndarray) -> BlockBatch | None:
        """Pack one encoded batch; returns the blocks it completes, or None."""
        if len(offsets) <= 1:
            return None
        framed, framed_offsets = frame_documents(ids, offsets, self.prefix, self.suffix)
        self.documents += len(framed_offsets) - 1
        self.tokens += len(framed)
        if self._skip:
            framed, framed_offsets = self._drop_skipped(framed, framed_offsets)
            if len(framed_offsets) <= 1:
                return None
        if not self.config.packing:
            return self._one_per_sample(framed, framed_offsets)

        size = self.config.block_size
        start = self.blocks * size
        ends = start + len(self._carry) + framed_offsets[1:]
        stream = np.concatenate((self._carry, framed)) if len(self._carry) else framed
        count = len(stream) // size
        cut = count * size
        self._carry = stream[cut:].copy()
        pending = np.concatenate((self._pending_ends, ends))
        # A document ending exactly on the last block boundary belongs to these blocks.
        done = int(np.searchsorted(pending, start + cut, side="right"))
        self._pending_ends = pending[done:]
        if count == 0:
            return None
        self.blocks += count
        return BlockBatch(
            tokens=stream[:cut].reshape(count, size),
            lengths=np.full(count, size, dtype=np.int32),
            first_block=self.blocks - count,
            doc_ends=pending[:done],
        )

    def finish(self) -> BlockBatch | None:
        """The final partial block under `remainder=pad`, or None; counts the dropped tail."""
        if self._finished:
            return None
        self._finished = True
        tail = len(self._carry)
        if tail == 0 or not self.config.packing:
            return None
        if self.config.remainder == "drop":
            self.dropped_tokens += tail
            return None
        size = self.config.block_size
        block = np.full((1, size), self.pad_id, dtype=np.uint32)
        block[0, :tail] = self._carry
        self.padded_tokens += size - tail
        self.blocks += 1
        return BlockBatch(
            tokens=block,
            lengths=np.array([tail], dtype=np.int32),
            first_block=self.blocks - 1,
            doc_ends=self._pending_ends,
        )

    def _one_per_sample(self, framed: np.ndarray, framed_offsets: np.ndarray) -> BlockBatch:
        size = self.config.block_size
        count = len(framed_offsets) - 1
        full = np.diff(framed_offsets)
        lengths = np.minimum(full, size).astype(np.int32)
        self.truncated_tokens += int((full - lengths).sum())
        self.padded_tokens += int(size * count - lengths.sum())
        tokens = np.full((count, size), self.pad_id, dtype=np.uint32)
        # Scatter each document's first `length` tokens into its row.
        keep = np.arange(size)[None, :] < lengths[:, None]
        rows = np.repeat(framed_offsets[:-1], lengths)
        within = np.arange(int(lengths.sum())) - np.repeat(
            np.cumsum(lengths, dtype=np.int64) - lengths, lengths
        )
        tokens[keep] = framed[rows + within]
        first = self.blocks
        self.blocks += count
        doc_ends = (np.arange(first, first + count, dtype=np.int64) * size) + lengths
        return BlockBatch(tokens=tokens, lengths=lengths, first_block=first, doc_ends=doc_ends)


_COUNTS = (
    "documents",
    "tokens",
    "blocks",
    "dropped_tokens",
    "padded_tokens",
    "truncated_tokens",
)


def position_ids(batch_tokens_shape: tuple[int, int], first_block: int, doc_ends: np.ndarray):
    """Positions restarting at every block start and after every document end.

    Example: block size 8, one block, documents ending at 4 and 7:
    [0 1 2 3 0 1 2 0].
    """
    count, size = batch_tokens_shape
    total = count * size
    start = first_block * size
    reset = np.zeros(total, dtype=bool)
    reset[::size] = True
    local = doc_ends - start
    reset[local[(local >= 0) & (local < total)]] = True
    index = np.arange(total, dtype=np.int64)
    last_reset = np.maximum.accumulate(np.where(reset, index, 0))
    return (index - last_reset).reshape(count, size)


def block_samples(batch: BlockBatch, with_position_ids: bool = False):
    """The training view of a block batch: int64 arrays of shape (blocks, block_size).

    `labels` are the ids (the model shifts them), -100 on padding; `attention_mask` is 0 on
    padding. Padding is found by position (`lengths`), never by token id, so a pad id equal to
    EOS never masks a real EOS.
    """
    input_ids = batch.tokens.astype(np.int64)
    size = input_ids.shape[1]
    if np.all(batch.lengths == size):
        attention_mask = np.ones_like(input_ids)
        labels = input_ids.copy()
    else:
        attention_mask = (np.arange(size)[None, :] < batch.lengths[:, None]).astype(np.int64)
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX)
    sample = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
    if with_position_ids:
        sample["position_ids"] = position_ids(input_ids.shape, batch.first_block, batch.doc_ends)
    return sample
