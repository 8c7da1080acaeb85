"""The SFT store: variable-length samples with their label masks, and preference pairs.

```
STORE/metadata.json               format streampack-sft-store, version, tokenizer, template,
                                  max_length, counts, and per stream its file, dtype and crc32;
                                  written last
STORE/report.json                 the run's report
STORE/shard-00000.tokens          every sample's ids, one after another (uint16 where every id
                                  fits, else uint32, as the token store chooses)
STORE/shard-00000.mask            uint8 per token: 1 where the token is trained (label = id)
STORE/shard-00000.offsets.npy     int64, samples + 1: sample i is tokens[offsets[i]:offsets[i+1]]
```

A preference store holds `shard-00000.{prompt,chosen,rejected}.tokens` and their
`.offsets.npy` instead. The folder checks, `--overwrite` (built beside, swapped in when whole)
and the atomic writes are the token store's own: `SFTStoreWriter` is its `StoreWriter` with
other files. TODO(issue 4): one shard per stream for now; very large sets would want the token
store's size-based shards.
"""

import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np

from ..errors import StoreError
from ..pack import IGNORE_INDEX
from ..store import choose_dtype
from ..store.atomic import PARTIAL, save_npy_atomic
from ..store.format import METADATA
from ..store.writer import StoreWriter
from .collate import pack_samples, packed_batch
from .encode import Sample
from .stream import SFTStream

log = logging.getLogger(__name__)

FORMAT_NAME = "streampack-sft-store"
FORMAT_VERSION = 1
SHARD = "shard-00000"
PAIR_PARTS = ("prompt", "chosen", "rejected")


class _TokenFile:
    """One id stream (and optionally its mask) written to `.partial` names; offsets kept."""

    def __init__(self, folder: Path, name: str, dtype: np.dtype, with_mask: bool) -> None:
        self.folder, self.name, self.dtype = folder, name, dtype
        self.limit = np.iinfo(dtype).max
        self._tokens = open(folder / f"{name}.tokens{PARTIAL}", "wb")  # noqa: SIM115
        self._mask = open(folder / f"{name}.mask{PARTIAL}", "wb") if with_mask else None  # noqa: SIM115
        self.crc32 = self.mask_crc32 = 0
        self.offsets = [0]

    def add(self, ids, mask=None) -> None:
        ids = np.asarray(ids)
        if ids.size and int(ids.max()) > self.limit:
            raise StoreError(
                f"token id {int(ids.max())} does not fit the store's {self.dtype.name}; "
                f"the tokenizer's vocabulary is larger than its metadata says"
            )
        data = np.ascontiguousarray(ids, dtype=self.dtype).tobytes()
        self._tokens.write(data)
        self.crc32 = zlib.crc32(data, self.crc32)
        if self._mask is not None:
            bits = np.ascontiguousarray(mask, dtype=np.uint8).tobytes()
            self._mask.write(bits)
            self.mask_crc32 = zlib.crc32(bits, self.mask_crc32)
        self.offsets.append(self.offsets[-1] + len(ids))

    def _close(self, handle, final: str) -> None:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(self.folder / f"{final}{PARTIAL}", self.folder / final)

    def commit(self) -> dict:
        save_npy_atomic(
            self.folder / f"{self.name}.offsets.npy", np.asarray(self.offsets, dtype=np.int64)
        )
        info = {
            "tokens": f"{self.name}.tokens",
            "offsets": f"{self.name}.offsets.npy",
            "count": len(self.offsets) - 1,
            "total_tokens": self.offsets[-1],
            "crc32": self.crc32,
        }
        if self._mask is not None:
            self._close(self._mask, f"{self.name}.mask")
            info.update(mask=f"{self.name}.mask", mask_crc32=self.mask_crc32)
        # The ids file is renamed last: a stream whose .tokens exists is whole.
        self._close(self._tokens, f"{self.name}.tokens")
        return info

    def abort(self) -> None:
        for handle, suffix in ((self._tokens, "tokens"), (self._mask, "mask")):
            if handle is not None and not handle.closed:
                handle.close()
                (self.folder / f"{self.name}.{suffix}{PARTIAL}").unlink(missing_ok=True)


class SFTStoreWriter(StoreWriter):
    """The token store's writer (folder checks, overwrite beside and swap, metadata last), with
    variable-length id streams instead of fixed blocks.

    The inherited metadata keys hold: `dtype` of the ids, `blocks` and `doc_ends` the number of
    samples (or pairs), `block_size` the `max_length`, and `shards` the id streams.
    """

    def __init__(self, path, dtype, max_length, preference: bool, overwrite: bool) -> None:
        super().__init__(path, block_size=max_length, dtype=dtype, overwrite=overwrite)
        names = [f"{SHARD}.{part}" for part in PAIR_PARTS] if preference else [SHARD]
        self.streams = [_TokenFile(self.path, name, self.dtype, not preference) for name in names]

    def add_sample(self, sample) -> None:
        self.streams[0].add(sample.input_ids, sample.labels != IGNORE_INDEX)

    def add_pair(self, pair: dict) -> None:
        for stream, part in zip(self.streams, PAIR_PARTS, strict=True):
            stream.add(pair[f"{part}_ids"])

    def commit(self, metadata: dict, report: dict) -> None:
        self.shards = [stream.commit() for stream in self.streams]
        self.blocks = self.doc_ends = self.shards[0]["count"]
        super().commit({**metadata, "format": FORMAT_NAME, "version": FORMAT_VERSION}, report)

    def abort(self) -> None:
        for stream in self.streams:
            stream.abort()
        super().abort()


def write_sft_store(stream: SFTStream, output, overwrite: bool = False, on_progress=None) -> dict:
    """Write every sample (or pair) of `stream`, in file order, to a store at `output`;
    `on_progress(count)` is called every 1,024 samples (or pairs) and at the end."""
    tokenizer = stream.tokenizer
    preference = stream.config.preference
    writer = SFTStoreWriter(
        output,
        choose_dtype(tokenizer.vocab_size),
        stream.config.max_length,
        preference,
        overwrite,
    )
    try:
        items = stream.pairs() if preference else stream.samples()
        add = writer.add_pair if preference else writer.add_sample
        count = 0
        for count, item in enumerate(items, 1):
            add(item)
            if on_progress is not None and count % 1024 == 0:
                on_progress(count)
        if on_progress is not None:
            on_progress(count)
    except BaseException:
        writer.abort()
        raise
    report = {**stream.report, "store": str(output)}
    metadata = {
        "streampack_version": version("streampack"),
        "kind": "preference" if preference else "sft",
        "tokenizer": {
            "name": tokenizer.name,
            "vocab_hash": tokenizer.vocab_hash,
            "vocab_size": tokenizer.vocab_size,
            "eos_id": tokenizer.eos_id,
            "pad_id": tokenizer.pad_id,
        },
        "template": stream.template.name,
        "max_length": stream.config.max_length,
        "last_turn_only": stream.config.last_turn_only,
        "records": report["records"],
        "samples": report["pairs"] if preference else report["samples"],
        "tokens": report["tokens"],
        "trained_tokens": report["trained_tokens"],
        "truncated_samples": report["truncated_samples"],
        "skipped_records": sum(entry["count"] for entry in report["skipped"].values()),
        "sources": stream.sources,
    }
    writer.commit(metadata, report)
    return report


class SFTStore(Sequence):
    """An SFT store read in place: `len(store)` samples; `store[i]` a dict of int64 arrays,
    `input_ids`, `labels` (-100 where the mask is 0) and `attention_mask`; in a preference
    store `prompt_ids`, `chosen_ids` and `rejected_ids`."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        meta_path = self.path / METADATA
        if not meta_path.is_file():
            raise StoreError(
                f"{self.path}: not a complete SFT store (no {METADATA}); run `streampack sft` again"
            )
        self.metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.metadata.get("format") != FORMAT_NAME:
            raise StoreError(
                f"{meta_path}: not an SFT store (format {self.metadata.get('format')!r}, "
                f"expected {FORMAT_NAME!r}); token stores are read with TokenStore"
            )
        if self.metadata.get("version", 0) > FORMAT_VERSION:
            raise StoreError(
                f"{meta_path}: SFT store version {self.metadata['version']} is newer than this "
                f"streampack reads ({FORMAT_VERSION}); upgrade streampack"
            )
        self.dtype = np.dtype(self.metadata["dtype"])
        self.preference = self.metadata["kind"] == "preference"
        self._streams = []
        for info in self.metadata["shards"]:
            tokens = np.memmap(self.path / info["tokens"], dtype=self.dtype, mode="r")
            offsets = np.load(self.path / info["offsets"])
            if len(tokens) != info["total_tokens"] or len(offsets) != info["count"] + 1:
                raise StoreError(
                    f"{self.path / info['tokens']}: {len(tokens)} ids and {len(offsets)} offsets "
                    f"(expected {info['total_tokens']} and {info['count'] + 1})"
                )
            mask = None
            if "mask" in info:
                mask = np.memmap(self.path / info["mask"], dtype=np.uint8, mode="r")
            self._streams.append((tokens, mask, offsets))

    def __len__(self) -> int:
        return int(self.metadata["samples"])

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sample (a preference store: per prompt)."""
        return np.diff(self._streams[0][2])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"sample {index} out of range for a store of {count} samples")
        index %= count
        if self.preference:
            return {
                f"{part}_ids": np.asarray(tokens[offsets[index] : offsets[index + 1]], np.int64)
                for part, (tokens, _, offsets) in zip(PAIR_PARTS, self._streams, strict=True)
            }
        tokens, mask, offsets = self._streams[0]
        start, end = offsets[index], offsets[index + 1]
        input_ids = np.asarray(tokens[start:end], dtype=np.int64)
        labels = np.where(mask[start:end] == 1, input_ids, IGNORE_INDEX)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": np.ones_like(input_ids),
        }

    def packed_batches(
        self, block_size: int, batch_size: int = 8, buffer_size: int = 512, seed: int = 0
    ) -> Iterator[dict]:
        """The samples packed into rows of `block_size` tokens, `batch_size` rows per batch,
        as `stream_sft(..., pack=True)` packs them (`collate.pack_samples`, `packed_batch`)."""
        if self.preference:
            raise StoreError(f"{self.path}: a preference store holds pairs; pairs are not packed")
        samples = (Sample(**self[index]) for index in range(len(self)))
        blocks = pack_samples(samples, block_size, buffer_size, seed)
        pad_id = int(self.metadata["tokenizer"]["pad_id"])
        batch: list = []
        for block in blocks:
            batch.append(block)
            if len(batch) == batch_size:
                yield packed_batch(batch, block_size, pad_id)
                batch = []
        if batch:
            yield packed_batch(batch, block_size, pad_id)


def verify_sft_store(path, checksums: bool = True) -> list[str]:
    """Every inconsistency of an SFT store with its metadata, as `file: what (expected, found)`."""
    path = Path(path)
    try:
        store = SFTStore(path)
    except (StoreError, OSError, ValueError, KeyError) as error:
        return [str(error)]
    meta = store.metadata
    vocab = int(meta["tokenizer"]["vocab_size"])
    problems: list[str] = []
    counts = {info["count"] for info in meta["shards"]}
    if len(counts) != 1 or counts != {len(store)}:
        problems.append(f"metadata: samples {len(store)}, but the streams hold {sorted(counts)}")
    for info, (tokens, mask, offsets) in zip(meta["shards"], store._streams, strict=True):
        name = info["tokens"]
        if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(tokens):
            problems.append(f"{name}: offsets do not run from 0 up to its {len(tokens)} ids")
            continue
        if len(tokens) and int(tokens.max()) >= vocab:
            problems.append(
                f"{name}: token id {int(tokens.max())} outside the vocabulary ({vocab})"
            )
        if checksums and zlib.crc32(memoryview(np.ascontiguousarray(tokens))) != info["crc32"]:
            problems.append(
                f"{name}: crc32 checksum differs: the file changed after it was written"
            )
        if mask is None:
            continue
        if len(mask) != len(tokens):
            problems.append(f"{info['mask']}: {len(mask)} mask bytes (expected {len(tokens)})")
            continue
        if checksums and zlib.crc32(memoryview(np.ascontiguousarray(mask))) != info["mask_crc32"]:
            problems.append(
                f"{info['mask']}: crc32 checksum differs: the file changed after it was written"
            )
        if len(mask) and int(mask.max()) > 1:
            problems.append(f"{info['mask']}: mask values other than 0 and 1")
        # Every sample must train on at least one token: one with all labels -100 is never stored.
        empty = np.diff(offsets) == 0
        if len(tokens):
            starts = np.minimum(offsets[:-1], len(tokens) - 1)
            trained = np.add.reduceat(mask.astype(np.int64), starts)
            untrained = int(np.count_nonzero((trained == 0) | empty))
        else:
            untrained = len(empty)
        if untrained:
            problems.append(f"{info['mask']}: {untrained} samples without a trained token")
    return problems
