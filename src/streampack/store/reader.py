"""Reading a store: memory-mapped shards, random access to any block in O(1)."""

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import StoreError
from ..pack import BlockBatch, block_samples
from . import format as layout


def read_metadata(path: Path) -> dict:
    meta_path = path / layout.METADATA
    if not path.is_dir():
        raise StoreError(f"{path}: no such store folder")
    if not meta_path.is_file():
        if (path / "build.json").is_file():
            raise StoreError(
                f"{path}: not a complete token store (no {layout.METADATA}): its build did "
                f"not finish; run the same `streampack pack` again to finish it"
            )
        raise StoreError(
            f"{path}: not a complete token store (no {layout.METADATA}): not a store, or "
            f"one whose build stopped before its first shard"
        )
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise StoreError(f"{meta_path}: not valid JSON ({error})") from None
    if metadata.get("format") != layout.FORMAT_NAME:
        raise StoreError(f"{meta_path}: not a streampack store (format {metadata.get('format')!r})")
    if metadata.get("version", 0) > layout.FORMAT_VERSION:
        raise StoreError(
            f"{meta_path}: store format version {metadata['version']} is newer than this "
            f"streampack reads ({layout.FORMAT_VERSION}); upgrade streampack"
        )
    return metadata


class TokenStore(Sequence):
    """A packed store, read in place: `len(store)` blocks, `store[i]` a training sample.

    Each sample is a dict of int64 numpy arrays of length `block_size`: `input_ids`, `labels`
    (-100 on padding), `attention_mask` and, if the store was packed with position ids reset or
    `position_ids=True` is given, `position_ids`.

    With `follow=True` the store may grow while it is read (`pack --append`, `pack --follow`):
    `len(store)` is the blocks committed when the metadata was last read (`refresh()`), and
    iterating yields every block, then waits for more, reading the metadata again every `poll`
    seconds, until `stop()` is called (from any thread) or Ctrl-C.
    """

    def __init__(
        self, path, position_ids: bool | None = None, follow: bool = False, poll: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.follow = follow
        self.poll = poll
        self._stop = threading.Event()
        self.metadata = read_metadata(self.path)
        self.block_size = int(self.metadata["block_size"])
        self.dtype = np.dtype(self.metadata["dtype"])
        self.shards: list[dict] = []
        self._first = np.empty(0, np.int64)
        self.lengths = np.empty(0, np.int32)
        self._maps: dict[int, np.ndarray] = {}
        self._ends: dict[int, np.ndarray] = {}
        self._take(self.metadata)
        if position_ids is None:
            position_ids = self.metadata.get("position_ids") == "reset"
        self.with_position_ids = position_ids

    def _take(self, metadata: dict) -> None:
        """Load the shards of `metadata` not loaded yet; committed shards never change."""
        new = metadata["shards"][len(self.shards) :]
        lengths = [np.load(self.path / layout.lengths_file(s["name"])) for s in new]
        self.lengths = np.concatenate([self.lengths, *lengths]) if lengths else self.lengths
        self.shards = self.shards + new
        self._first = np.array([s["first_block"] for s in self.shards], dtype=np.int64)
        self.metadata = metadata

    def refresh(self) -> int:
        """Read the metadata again and take the shards committed since; the new length."""
        metadata = read_metadata(self.path)
        if metadata["blocks"] != self.metadata["blocks"]:
            self._take(metadata)
        return len(self)

    def stop(self) -> None:
        """End a `follow=True` iteration at its next wait."""
        self._stop.set()

    def __len__(self) -> int:
        return int(self.metadata["blocks"])

    def _shard_of(self, index: int) -> int:
        return int(np.searchsorted(self._first, index, side="right")) - 1

    def _tokens(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            info = self.shards[shard]
            path = self.path / layout.tokens_file(info["name"])
            expected = info["blocks"] * self.block_size * self.dtype.itemsize
            if not path.is_file() or path.stat().st_size != expected:
                raise StoreError(
                    f"{path}: missing or of the wrong size (expected {expected} bytes); "
                    f"run `streampack verify {self.path}`"
                )
            self._maps[shard] = np.memmap(
                path, dtype=self.dtype, mode="r", shape=(info["blocks"], self.block_size)
            )
        return self._maps[shard]

    def _doc_ends(self, shard: int) -> np.ndarray:
        if shard not in self._ends:
            name = self.shards[shard]["name"]
            self._ends[shard] = np.load(self.path / layout.doc_ends_file(name), mmap_mode="r")
        return self._ends[shard]

    def block_tokens(self, index: int) -> np.ndarray:
        """The raw ids of block `index`, as stored (a read-only memory-mapped view)."""
        index = self._check(index)
        shard = self._shard_of(index)
        return self._tokens(shard)[index - self._first[shard]]

    def _check(self, index: int) -> int:
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"block {index} out of range for a store of {count} blocks")
        return index % count if index < 0 else index

    def __repr__(self) -> str:
        return (
            f"TokenStore({str(self.path)!r}: {len(self)} blocks of {self.block_size}, "
            f"{self.dtype.name}, tokenizer {self.metadata['tokenizer']['name']})"
        )

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"block index must be an integer or a slice, found {index!r}")
        index = self._check(int(index))
        shard = self._shard_of(index)
        ends = self._doc_ends(shard)
        start, stop = index * self.block_size, (index + 1) * self.block_size
        low, high = np.searchsorted(ends, [start, stop], side="left")
        batch = BlockBatch(
            tokens=self._tokens(shard)[index - self._first[shard]][None, :],
            lengths=self.lengths[index : index + 1],
            first_block=index,
            doc_ends=np.asarray(ends[low:high]),
        )
        return {
            key: value[0] for key, value in block_samples(batch, self.with_position_ids).items()
        }

    def __iter__(self) -> Iterator[dict]:
        index = 0
        while True:
            while index < len(self):
                yield self[index]
                index += 1
            if not self.follow or self._stop.is_set():
                return
            while index >= self.refresh():
                if self._stop.wait(self.poll):
                    return

    def decode(self, index: int, tokenizer) -> str:
        """Block `index` as text, through `tokenizer` (a `LoadedTokenizer`), padding left out."""
        length = int(self.lengths[index])
        return tokenizer.decode(self.block_tokens(index)[:length])


def store_tokenizer(metadata: dict, tokenizer=None):
    """(the tokenizer a store was built with, None), or (None, why it cannot be had).

    `tokenizer` (a spec or a `LoadedTokenizer`) replaces the name the metadata records; either
    is loaded offline and must have the vocabulary hash the store recorded.
    """
    from ..errors import TokenizerError
    from ..tokenize import BUILTIN_NAME, load_tokenizer

    wanted = metadata["tokenizer"]
    spec = tokenizer if tokenizer is not None else wanted["name"]
    try:
        loaded = (
            spec
            if hasattr(spec, "vocab_hash")
            else load_tokenizer(None if spec == BUILTIN_NAME else spec)
        )
    except TokenizerError as error:
        return None, f"cannot load the store's tokenizer {wanted['name']!r}: {error}"
    if wanted.get("vocab_hash") and loaded.vocab_hash != wanted["vocab_hash"]:
        return None, (
            f"tokenizer {loaded.name} has another vocabulary than the store's "
            f"{wanted['name']} (vocabulary hash differs)"
        )
    return loaded, None
