"""PyTorch datasets over streams and stores: dicts of tensors a DataLoader and the Trainer take.

| dataset                | over                      | style    | length      | resume cost      |
|------------------------|---------------------------|----------|-------------|------------------|
| `StreamDataset`        | `streampack.stream(...)`  | iterable | `length=`   | one read batch   |
| `StoreDataset`         | `TokenStore`              | map      | blocks      | the sampler's    |
| `StoreIterableDataset` | `TokenStore`              | iterable | blocks      | O(1)             |
| `SFTStoreDataset`      | `SFTStore`                | map      | samples     | the sampler's    |
| `SFTStreamDataset`     | `streampack.stream_sft()` | iterable | `length=`   | replays          |

The iterable ones split ranks and DataLoader workers themselves (`partition.py`), keep every rank's
share equal (`even`), and have `state_dict()` / `load_state_dict()`.
"""

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..api import BlockStream
from ..engine import Pipeline, StreamPosition
from ..errors import ConfigError
from ..pack import IGNORE_INDEX, block_samples
from ..sft.collate import pad_batch
from ..sft.encode import Sample
from ..sft.store import SFTStore
from ..sft.stream import SFTStream
from ..store import TokenStore
from . import partition
from .positions import PositionTable

log = logging.getLogger(__name__)

STATE_VERSION = 1


def _tensors(sample: dict) -> dict:
    return {key: torch.from_numpy(np.asarray(value)) for key, value in sample.items()}


class _Shared:
    """Epoch, rank/worker layout, equal shares, counting and state of the iterable datasets.

    The state is the number of samples this rank's loop has consumed in the epoch (`taken`):
    counted here when the dataset is iterated in the loop's own process (`num_workers=0`), by
    `streampack.torch.DataLoader` with workers, or from the Trainer's step by the callback.
    """

    kind = "iterable"

    def _setup(self, batch_size: int, even: str, rank, world_size) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, found {batch_size}")
        partition.check_even(even)
        if (rank is None) != (world_size is None):
            raise ConfigError("give both rank and world_size, or neither (then they are detected)")
        if rank is not None:
            partition.check_world(rank, world_size)
        self.batch_size = batch_size
        self.even = even
        self._rank, self._world_size = rank, world_size
        self.epoch = 0
        # (mode, batch size, world size) once the Trainer callback has taken over; see partition.
        self._trainer: tuple[str, int, int] | None = None
        self._resume: dict | None = None
        self._taken = 0
        self._loader_taken: int | None = None
        self._iterated_here = False

    # -- who we are ---------------------------------------------------------------------------

    def world(self) -> tuple[int, int]:
        if self._trainer is not None:
            return 0, self._trainer[2]
        if self._rank is not None:
            return self._rank, self._world_size
        rank, size = partition.world()
        partition.check_world(rank, size)
        return rank, size

    def _round(self) -> int:
        if self._trainer is not None:
            return self._trainer[1] * self._trainer[2]
        return self.batch_size * self.world()[1]

    def _layout(self) -> tuple[partition.Layout, int]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rank, size = self.world()
        if self._trainer is not None:
            mode, batch, size = self._trainer
            return partition.plan(mode, batch, 0, size, worker, workers), worker
        return partition.plan("split", self.batch_size, rank, size, worker, workers), worker

    def _per_rank(self, total: int) -> int:
        """What len() reports: the Trainer's loader divides the whole epoch between ranks."""
        return total if self._trainer is not None else total // self.world()[1]

    # -- epochs and state -------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration yields (the Trainer calls it; a plain loop should)."""
        if self._resume is not None and self._resume["epoch"] != epoch:
            self._resume = None
        if epoch != self.epoch:
            self._taken = 0
        self.epoch = epoch

    def _first(self, taken: int) -> tuple[int, int]:
        """(first sample of the global order, samples of this rank to skip after it) once a
        rank has consumed `taken` samples of the epoch."""
        rounds, skip = divmod(taken, self._round() // self._world_for_round())
        return rounds * self._round(), skip

    def _start(self) -> tuple[int, int, dict | None]:
        """Where this iteration starts: `_first` of the resume state, and that state."""
        state = self._resume
        if state is None or state["epoch"] != self.epoch:
            return 0, 0, None
        return (*self._first(state["taken"]), state)

    def _world_for_round(self) -> int:
        return self._trainer[2] if self._trainer is not None else self.world()[1]

    def _base_taken(self) -> int:
        state = self._resume
        return state["taken"] if state is not None and state["epoch"] == self.epoch else 0

    def _loop_started(self) -> None:
        self._loader_base = self._base_taken()
        self._loader_taken = 0

    def _loop_took(self, samples: int) -> None:
        self._loader_taken += samples

    def _loop_ended(self) -> None:
        self._loader_taken = None
        self.set_epoch(self.epoch + 1)

    def taken(self) -> int:
        """Samples this rank's loop has consumed in the current epoch."""
        if self._loader_taken is not None:
            return self._loader_base + self._loader_taken
        if not self._iterated_here and self._worker_activity():
            raise ConfigError(
                "state_dict(): this dataset ran in DataLoader workers, so this process cannot "
                "see how far the loop got; iterate it through streampack.torch.DataLoader (a "
                "torch DataLoader that counts batches), or use StreampackCallback with the Trainer"
            )
        return self._taken

    def _worker_activity(self) -> bool:
        return False

    def state_dict(self, taken: int | None = None) -> dict:
        """Where this rank's loop is in the epoch; `taken` overrides the count (the callback's)."""
        taken = self.taken() if taken is None else taken
        return {
            "version": STATE_VERSION,
            "dataset": type(self).__name__,
            "epoch": self.epoch,
            "taken": taken,
            "batch_size": self._trainer[1] if self._trainer is not None else self.batch_size,
            "world_size": self._world_for_round(),
            "even": self.even,
            "fingerprint": self._fingerprint(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next iteration of `state["epoch"]` starts where the saved loop stopped."""
        if state.get("version") != STATE_VERSION or state.get("dataset") != type(self).__name__:
            raise ConfigError(
                f"this state is of {state.get('dataset')!r} version {state.get('version')}, "
                f"not of a {type(self).__name__} version {STATE_VERSION}"
            )
        batch = self._trainer[1] if self._trainer is not None else self.batch_size
        if state["batch_size"] != batch or state["even"] != self.even:
            raise ConfigError(
                f"the state was saved with batch_size {state['batch_size']} and even "
                f"{state['even']!r}; this dataset has {batch} and {self.even!r}: the order of "
                f"samples depends on both, so resume with the same ones"
            )
        mine = self._fingerprint()
        changed = sorted(k for k in mine if mine[k] != state["fingerprint"].get(k))
        if changed:
            raise ConfigError(
                f"the data or settings changed since the state was saved ({', '.join(changed)} "
                f"differ), so its position would not point at the same samples"
            )
        # Another world size is fine at a whole round: the state then stands for the first
        # taken x world_size samples of the epoch's order, which does not depend on the ranks
        # (nor on the number of DataLoader workers).
        size, taken = self._world_for_round(), state["taken"]
        if size != state["world_size"]:
            consumed = taken * state["world_size"]
            if taken % batch or consumed % (size * batch):
                raise ConfigError(
                    f"the state's {taken} samples on each of {state['world_size']} ranks do not "
                    f"make whole steps of {batch} samples on each of {size} ranks; resume on "
                    f"{state['world_size']} ranks"
                )
            taken = consumed // size
        self._resume = {**state, "taken": taken}
        self.epoch = state["epoch"]
        self._taken = taken

    def _fingerprint(self) -> dict:
        raise NotImplementedError

    def _count(self, samples: Iterator) -> Iterator:
        """Count what the loop's own process yields (DataLoader workers count nothing here)."""
        counting = get_worker_info() is None
        if counting:
            self._iterated_here = True
            self._taken = self._base_taken()
            self._resume = None
        for sample in samples:
            if counting:
                self._taken += 1
            yield sample


class StreamDataset(_Shared, IterableDataset):
    """The blocks of a live stream (`streampack.stream(...)`), as dicts of int64 tensors.

    Every consumer (rank x DataLoader worker) runs the same pipeline and keeps its own chunks, so
    the blocks are exactly those of a single-process pass, each yielded once per epoch; the cost
    is that each consumer tokenizes the whole stream (the pipeline already uses every core in
    threads, so `num_workers=0` is the fast setting).

    Args:
        stream: a `BlockStream`; its settings and loaded tokenizer are reused.
        batch_size: the DataLoader's batch size (the Trainer callback sets it).
        even: `drop` the last partial round of world x batch_size blocks, or `pad` it.
        length: the blocks of the whole stream (a previous pass's `report["blocks"]`, or
            `estimate_blocks`); gives `len()`, and each epoch is cut or padded to it.
        rank, world_size: override `torch.distributed` and `RANK`/`WORLD_SIZE`.
    """

    def __init__(
        self,
        stream: BlockStream,
        *,
        batch_size: int = 1,
        even: str = "drop",
        length: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if not isinstance(stream, BlockStream):
            raise ConfigError(
                f"StreamDataset takes streampack.stream(...), found {type(stream).__name__}"
            )
        if length is not None and length < 0:
            raise ConfigError(f"length must be a number of blocks (0 or more), found {length}")
        self._setup(batch_size, even, rank, world_size)
        used = stream.pipeline
        self._settings = (used.sources, used.read, used.pack, used.tokenize)
        self.tokenizer = used.tokenizer
        self.block_size = used.pack.block_size
        self.with_position_ids = used.pack.position_ids == "reset"
        self.length = length
        self.files = [(file.path, file.size) for file in used.files]
        self.positions = PositionTable()
        self.report: dict = {}

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError(
                "this StreamDataset has no length (a stream's size is known only at its end): "
                "set max_steps in TrainingArguments (or count steps yourself), or give "
                "length= (a previous pass's report['blocks'], or estimate_blocks(stream))"
            )
        return self._per_rank(partition.even_count(self.length, self._round(), self.even))

    def _fingerprint(self) -> dict:
        sources, read, pack, _ = self._settings
        return {
            "sources": list(sources),
            "files": [list(file) for file in self.files],
            "read": repr(read),
            "pack": repr(pack),
            "tokenizer": self.tokenizer.vocab_hash,
            "eos_id": self.tokenizer.eos_id,
            "length": self.length,
        }

    def _worker_activity(self) -> bool:
        return bool(self.positions.table[:, 0, 0].sum())

    def state_dict(self, taken: int | None = None) -> dict:
        state = super().state_dict(taken)
        first, _ = self._first(state["taken"])
        position = self.positions.best(first * self.block_size)
        if position is not None:
            path, size = self.files[position.file]
            state["position"] = {
                "file": position.file,
                "record": position.record,
                "token": position.token,
                "path": path,
                "bytes": size,
            }
        else:
            state["position"] = None
        return state

    def _pipeline(self) -> Pipeline:
        sources, read, pack, tokenize = self._settings
        return Pipeline(sources, read, pack, tokenize, tokenizer=self.tokenizer)

    def _padding(self) -> dict:
        size = self.block_size
        sample = {
            "input_ids": torch.full((size,), self.tokenizer.pad_id, dtype=torch.int64),
            "labels": torch.full((size,), IGNORE_INDEX, dtype=torch.int64),
            "attention_mask": torch.zeros(size, dtype=torch.int64),
        }
        if self.with_position_ids:
            sample["position_ids"] = torch.zeros(size, dtype=torch.int64)
        return sample

    def _blocks(self, pipeline: Pipeline) -> Iterator[dict]:
        for batch in pipeline.blocks():
            arrays = {
                key: torch.from_numpy(value)
                for key, value in block_samples(batch, self.with_position_ids).items()
            }
            for row in range(len(batch)):
                yield {key: value[row] for key, value in arrays.items()}

    def __iter__(self) -> Iterator[dict]:
        layout, worker = self._layout()
        first, skip, state = self._start()
        pipeline = self._pipeline()
        if [(f.path, f.size) for f in pipeline.files] != self.files:
            raise ConfigError(
                "the stream's files changed since this dataset was made (added, removed or "
                "resized); make a new StreamDataset"
            )
        pipeline.on_position = lambda position: self.positions.record(worker, position)
        if first:
            pipeline.start_at(self._restart_point(state, first), first)
        limit = None
        if self.length is not None:
            limit = partition.even_count(self.length, self._round(), self.even) - first

        def ended(seen: int, cut: bool) -> None:
            self.report = pipeline.report.as_dict()
            if self.length is None or worker != 0:
                return
            if cut or first + seen != self.length:
                log.warning(
                    "the stream %s %d blocks but length is %d: this epoch was %s to %d blocks; "
                    "pass length=%s",
                    "has more than" if cut else "had",
                    first + seen,
                    self.length,
                    "cut" if cut else "padded",
                    limit + first,
                    "the stream's report['blocks']" if cut else first + seen,
                )

        blocks = self._blocks(pipeline)
        with contextlib.closing(blocks):
            yield from self._count(
                partition.share(blocks, layout, self.even, limit, self._padding, skip, ended)
            )

    def _restart_point(self, state: dict | None, first: int) -> StreamPosition:
        saved = (state or {}).get("position")
        if saved is None:
            log.warning(
                "no restart position was saved with this state: re-reading the stream up to "
                "block %d to resume",
                first,
            )
            return StreamPosition(0, 0, 0)
        path, size = self.files[saved["file"]] if saved["file"] < len(self.files) else (None, 0)
        if (path, size) != (saved["path"], saved["bytes"]):
            raise ConfigError(
                f"the state resumes in {saved['path']} ({saved['bytes']} bytes), but file "
                f"{saved['file']} of the stream is now {path} ({size} bytes)"
            )
        return StreamPosition(saved["file"], saved["record"], saved["token"])

    def to_hf_iterable(self):
        """This dataset as a `datasets.IterableDataset` (for code that expects one)."""
        from .hf import iterable_from_torch

        return iterable_from_torch(self)


class StoreIterableDataset(_Shared, IterableDataset):
    """The blocks of a token store in a seeded order that changes every epoch, split between ranks
    and workers like `StreamDataset`; the state is O(1) and resuming reads nothing before it.

    The order is a pseudo-random permutation evaluated per position (`partition.permutation`):
    no table, the same in every process, deterministic for (seed, epoch).
    """

    def __init__(
        self,
        store,
        *,
        shuffle: bool = True,
        seed: int = 0,
        batch_size: int = 1,
        even: str = "drop",
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.store = store if isinstance(store, TokenStore) else TokenStore(store)
        self.shuffle = shuffle
        self.seed = seed
        self._setup(batch_size, even, rank, world_size)

    def __len__(self) -> int:
        return self._per_rank(partition.even_count(len(self.store), self._round(), self.even))

    def _fingerprint(self) -> dict:
        meta = self.store.metadata
        return {
            "store": str(self.store.path),
            "blocks": len(self.store),
            "created": meta.get("created"),
            "shuffle": self.shuffle,
            "seed": self.seed,
        }

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The global order of an epoch's block indices (for inspection and tests)."""
        count = len(self.store)
        positions = np.arange(count, dtype=np.int64)
        if not self.shuffle:
            return positions
        return partition.permutation(count, self.seed, self.epoch if epoch is None else epoch)(
            positions
        )

    def _padding(self) -> dict:
        size = self.store.block_size
        sample = {
            "input_ids": torch.full(
                (size,), self.store.metadata["tokenizer"]["pad_id"], dtype=torch.int64
            ),
            "labels": torch.full((size,), IGNORE_INDEX, dtype=torch.int64),
            "attention_mask": torch.zeros(size, dtype=torch.int64),
        }
        if self.store.with_position_ids:
            sample["position_ids"] = torch.zeros(size, dtype=torch.int64)
        return sample

    def _samples(self, layout: partition.Layout, first: int, skip: int) -> Iterator[dict]:
        count = len(self.store)
        total = partition.even_count(count, self._round(), self.even)
        order = partition.permutation(count, self.seed, self.epoch) if self.shuffle else None
        # Positions are relative to `first`, where the layout restarts (as the resumed loader
        # does); the order is evaluated one chunk at a time.
        for run in layout.own_chunks(0, total - first):
            own = np.arange(run.start, run.stop, dtype=np.int64)
            if skip:
                own = own[[layout.rank_position(int(j)) >= skip for j in own]]
            positions = own + first
            real = positions[positions < count]
            indices = order(real) if order is not None else real
            for index in indices.tolist():
                yield _tensors(self.store[index])
            for _ in range(len(positions) - len(real)):
                yield self._padding()

    def __iter__(self) -> Iterator[dict]:
        layout, _ = self._layout()
        first, skip, _ = self._start()
        yield from self._count(self._samples(layout, first, skip))

    def to_hf_iterable(self):
        from .hf import iterable_from_torch

        return iterable_from_torch(self)


class StoreDataset(Dataset):
    """A token store as a map-style dataset: `len()` blocks, `[i]` a dict of int64 tensors.

    For the Trainer's own sampler (shuffle, rank split, resume by skipping indices, no reads).
    """

    def __init__(self, store, position_ids: bool | None = None) -> None:
        self.store = (
            store if isinstance(store, TokenStore) else TokenStore(store, position_ids=position_ids)
        )

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> dict:
        return _tensors(self.store[int(index)])

    def to_hf(self):
        """The store as a map-style `datasets.Dataset` whose ids are the store's own memory."""
        from .hf import dataset_from_store

        return dataset_from_store(self.store)


class SFTStoreDataset(Dataset):
    """An SFT store as a map-style dataset of variable-length samples; batch with `SFTCollator`."""

    def __init__(self, store) -> None:
        self.store = store if isinstance(store, SFTStore) else SFTStore(store)
        if self.store.preference:
            raise ConfigError(
                f"{self.store.path} is a preference store; SFTStoreDataset reads SFT samples"
            )

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> dict:
        return _tensors(self.store[int(index)])


class SFTStreamDataset(_Shared, IterableDataset):
    """The samples of `streampack.stream_sft(...)` in file order, unpadded; batch with
    `SFTCollator`. Split between ranks and workers like `StreamDataset` (each consumer encodes
    every sample and keeps its own).

    TODO(issue 5): a resume re-reads the epoch up to its position (counted, then skipped); the
    block stream's restart points would bring it to one read batch.
    """

    def __init__(
        self,
        stream: SFTStream,
        *,
        batch_size: int = 1,
        even: str = "drop",
        length: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if not isinstance(stream, SFTStream) or stream.config.preference:
            raise ConfigError("SFTStreamDataset takes streampack.stream_sft(...) of SFT samples")
        self.stream = stream
        self.length = length
        self._setup(batch_size, even, rank, world_size)

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError(
                "this SFTStreamDataset has no length: set max_steps in TrainingArguments, or "
                "give length= (a previous pass's report['samples'])"
            )
        return self._per_rank(partition.even_count(self.length, self._round(), self.even))

    def _fingerprint(self) -> dict:
        return {
            "sources": list(self.stream.sources),
            "config": repr(self.stream.config),
            "tokenizer": self.stream.tokenizer.vocab_hash,
            "length": self.length,
        }

    def _padding(self) -> dict:
        return {
            "input_ids": torch.full((1,), self.stream.tokenizer.pad_id, dtype=torch.int64),
            "labels": torch.full((1,), IGNORE_INDEX, dtype=torch.int64),
            "attention_mask": torch.zeros(1, dtype=torch.int64),
        }

    def _samples(self, first: int) -> Iterator[dict]:
        for index, sample in enumerate(self.stream.samples()):
            if index < first:
                continue
            input_ids = torch.from_numpy(sample.input_ids)
            # An unpadded sample attends everywhere; the stream's masks are shared read-only
            # views, which torch would not take as they are.
            yield {
                "input_ids": input_ids,
                "labels": torch.from_numpy(sample.labels),
                "attention_mask": torch.ones_like(input_ids),
            }

    def __iter__(self) -> Iterator[dict]:
        layout, _ = self._layout()
        first, skip, _ = self._start()
        limit = None
        if self.length is not None:
            limit = partition.even_count(self.length, self._round(), self.even) - first
        samples = self._samples(first)
        with contextlib.closing(samples):
            yield from self._count(
                partition.share(samples, layout, self.even, limit, self._padding, skip)
            )


class SFTCollator:
    """Pads variable-length samples (dicts of `input_ids`, `labels`) into a batch of tensors,
    with `sft.pad_batch`: padding found by position, labels -100 on it."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id = pad_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, samples: list[dict]) -> dict:
        items = [
            Sample(
                np.asarray(s["input_ids"]),
                np.asarray(s["labels"]),
                np.asarray(s.get("attention_mask", np.ones(len(s["input_ids"]), np.int64))),
            )
            for s in samples
        ]
        arrays = pad_batch(items, self.pad_id, self.pad_to_multiple_of)
        # A padding sample (even="pad") keeps its zero mask: its one token is not attended.
        for row, sample in enumerate(items):
            arrays["attention_mask"][row, : len(sample)] = sample.attention_mask
        return {key: torch.from_numpy(value) for key, value in arrays.items()}


class DataLoader(torch.utils.data.DataLoader):
    """A torch DataLoader that tells a streampack iterable dataset how many batches the loop took,
    so that `dataset.state_dict()` is exact with workers too; it also hands the dataset its
    `batch_size`. After a whole pass it moves the dataset to the next epoch."""

    def __init__(self, dataset, batch_size: int = 1, **kwargs) -> None:
        if isinstance(dataset, _Shared):
            dataset.batch_size = batch_size
        super().__init__(dataset, batch_size=batch_size, **kwargs)

    def __iter__(self):
        dataset = self.dataset
        if not isinstance(dataset, _Shared):
            yield from super().__iter__()
            return
        dataset._loop_started()
        for batch in super().__iter__():
            dataset._loop_took(len(next(iter(batch.values()))))
            yield batch
        dataset._loop_ended()


def estimate_blocks(stream: BlockStream, every: int = 16) -> int:
    """About how many blocks `stream` yields, reading every file but tokenizing only every
    `every`-th read batch; exact for the documents, estimated for their tokens."""
    from ..sources import read_batches

    pipeline = stream.pipeline
    tokenizer = pipeline.tokenizer
    frame = len(tokenizer.prefix) + len(tokenizer.suffix) + 1
    chars = sampled_chars = sampled_tokens = documents = 0
    encoder = pipeline.encoder
    for index, batch in enumerate(read_batches(pipeline.files, pipeline.read, pipeline.report)):
        size = sum(map(len, batch.texts))
        chars += size
        documents += len(batch)
        if index % every == 0:
            ids, _ = encoder.encode_batch(batch.texts)
            sampled_tokens += len(ids)
            sampled_chars += size
    per_char = sampled_tokens / sampled_chars if sampled_chars else 0.0
    tokens = chars * per_char + documents * frame
    size = pipeline.pack.block_size
    if not pipeline.pack.packing:
        return documents
    if pipeline.pack.remainder == "pad":
        return int(-(-tokens // size))
    return int(tokens // size)
