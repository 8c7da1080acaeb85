"""The local engine: read, encode and pack in parallel stages, in order, bounded work in flight.

    reader thread ──► queue(4) ──► encoder thread (quicktok threads or HF processes) ──► queue(2)
        ──► consumer (packing, then the caller: an iterator or the store writer)

quicktok and HF tokenizers release the GIL while they encode, so the reader and the packer run
beside them. At most a few batches of a few MB are alive at once, whatever the corpus size.
"""

import collections
import logging
import queue
import resource
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .config import PackConfig, ReadConfig, TokenizeConfig
from .errors import SourceError
from .guard import BatchTuner, MemoryGuard
from .pack import BlockBatch, Packer
from .records import RecordBatch
from .report import Report
from .sources import discover, read_batches, source_names
from .sources.follow import FollowState, Watcher
from .tokenize import LoadedTokenizer, load_tokenizer, make_encoder

log = logging.getLogger(__name__)

READ_AHEAD = 4
ENCODE_AHEAD = 2
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def threaded(items: Iterable, maxsize: int, name: str, limit=None) -> Iterator:
    """Run `items` in a background thread, handing results over through a bounded queue.

    The producer blocks when the queue is full (back-pressure); an exception in it is raised in
    the consumer; closing the consumer stops the producer at its next hand-over. `limit`, a
    callable, can lower the bound while the run goes (the memory guard's `in_flight`).
    """
    handover: queue.Queue = queue.Queue(maxsize)
    stop = threading.Event()

    def put(item) -> bool:
        while limit is not None and handover.qsize() >= limit() and not stop.is_set():
            time.sleep(0.005)
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:
            put(_Failure(error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = handover.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Progress:
    """What a progress bar shows; the engine calls `update` once per encoded batch."""

    documents: int = 0
    tokens: int = 0
    bytes: int = 0
    total_bytes: int = 0
    listeners: list = field(default_factory=list)

    def update(self, documents: int, tokens: int, nbytes: int) -> None:
        self.documents += documents
        self.tokens += tokens
        self.bytes += nbytes
        for listener in self.listeners:
            listener(self)


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A point of a pass it can start again from: document `record` (0-based, as the readers
    yield them) of `files[file]`, whose first token lands at `token` in the output."""

    file: int
    record: int
    token: int


def skip_documents(batches: Iterable[RecordBatch], count: int) -> Iterator[RecordBatch]:
    """`batches` less their first `count` documents (read, not tokenized)."""
    for batch in batches:
        if count >= len(batch):
            count -= len(batch)
            continue
        if count:
            batch = RecordBatch(batch.path, batch.texts[count:], batch.lines[count:], batch.nbytes)
            count = 0
        yield batch


def split_batch(batch: RecordBatch, size: int, documents: int | None) -> list[RecordBatch]:
    """`batch` in consecutive slices of about `size` bytes of text and at most `documents`
    documents each (a document is never cut); the raw bytes are shared out in proportion."""
    texts = batch.texts
    if len(texts) <= 1 or (batch.nbytes <= size and (documents or len(texts)) >= len(texts)):
        return [batch]
    chars = max(sum(map(len, texts)), 1)
    # Characters stand in for bytes: counting UTF-8 bytes would encode every document again.
    per_slice = max(1, size * chars // max(batch.nbytes, 1))
    slices: list[RecordBatch] = []
    start = taken = total = used = 0
    for index, text in enumerate(texts):
        taken += len(text)
        if taken >= per_slice or index + 1 - start == documents or index == len(texts) - 1:
            total += taken
            nbytes = batch.nbytes * total // chars - used
            used += nbytes
            end = index + 1
            slices.append(RecordBatch(batch.path, texts[start:end], batch.lines[start:end], nbytes))
            start, taken = end, 0
    return slices


def join_blocks(batches: list[BlockBatch]) -> BlockBatch:
    """Consecutive block batches as one."""
    if len(batches) == 1:
        return batches[0]
    return BlockBatch(
        tokens=np.concatenate([batch.tokens for batch in batches]),
        lengths=np.concatenate([batch.lengths for batch in batches]),
        first_block=batches[0].first_block,
        doc_ends=np.concatenate([batch.doc_ends for batch in batches]),
    )


class Pipeline:
    """One run over the sources: `blocks()` yields block batches; `report` fills as it goes.

    Two hooks serve exact resumption (`streampack.torch`): `on_position`, when set, is called with
    the `StreamPosition` of every encoded batch before it is packed; `start_at(position, block)`
    makes the pass begin with block `block`, reading from `position` (one the hook reported).

    Read batches (`read.batch_bytes`, which the build journal counts) are cut into tokenizer
    batches of the size `read.batch_size` fixes (documents) or the tuner chooses (None, auto);
    the blocks are the same whatever the cut. `max_memory` is the memory guard's budget in
    bytes (None: its default, 0: no guard).

    `follow` (a dict of `settle`, `poll` and `state`, a state file path or None) watches the
    sources instead of listing them once: files are read as they become complete, and the run
    goes on until `stop()` (see `sources/follow.py`).
    """

    def __init__(
        self,
        sources,
        read: ReadConfig | None = None,
        pack: PackConfig | None = None,
        tokenize: TokenizeConfig | None = None,
        tokenizer: LoadedTokenizer | None = None,
        max_memory: int | None = None,
        follow: dict | None = None,
    ) -> None:
        self.read = read or ReadConfig()
        self.follow_settings = follow
        self.max_memory = max_memory
        self.guard = MemoryGuard(max_memory, READ_AHEAD)
        self.tuner = BatchTuner(
            None if self.read.batch_size is None else self.read.batch_bytes,
            self.read.batch_bytes,
        )
        self.pack = pack or PackConfig()
        self.tokenize = tokenize or TokenizeConfig()
        self.report = Report(self.read.on_error)
        self.progress = Progress()
        self.sources = source_names(sources)
        started = time.perf_counter()
        self.watcher: Watcher | None = None
        if follow is not None:
            self.watcher = Watcher(
                self.sources,
                FollowState(follow.get("state")),
                settle=follow.get("settle", 2.0),
                poll=follow.get("poll", 0.5),
                format=self.read.format,
            )
            self.files = []
        else:
            self.files = discover(self.sources, self.report, self.read.format)
        self.progress.total_bytes = sum(file.size for file in self.files)
        self.tokenizer = tokenizer or load_tokenizer(
            self.tokenize.tokenizer, self.tokenize.eos_token
        )
        loaded = time.perf_counter()
        self.tokenizer_seconds = loaded - started
        self.encoder = make_encoder(self.tokenizer, self.tokenize.backend, self.tokenize.workers)
        self.backend_seconds = time.perf_counter() - loaded
        self.packer = Packer(
            self.pack,
            eos_id=self.tokenizer.eos_id,
            pad_id=self.tokenizer.pad_id,
            prefix=self.tokenizer.prefix,
            suffix=self.tokenizer.suffix,
        )
        self.seconds = 0.0
        self.first_block_seconds: float | None = None
        self.started = False
        # path -> [documents, characters, text tokens] (no EOS), for tokens per character.
        self.text_counts: dict[str, list[int]] = {}
        # (file index, batches of that file, report mark) of every batch read, oldest first;
        # `_at` is the one of the latest batch packed, None during the tail.
        self._marks: collections.deque = collections.deque()
        self._at: tuple | None = None
        self.on_position = None
        self._start = StreamPosition(0, 0, 0)

    def start_at(self, position: StreamPosition, block: int) -> None:
        """Begin the pass with block `block`, reading from `position` (at or before its start)."""
        size = self.pack.block_size
        if not 0 <= position.token <= block * size:
            raise ValueError(f"position {position} is past the start of block {block}")
        self._start = position
        self.packer.resume(block, block * size - position.token)

    def blocks(self, start: dict | None = None) -> Iterator[BlockBatch]:
        """The run's block batches; a pipeline runs once (its packer and report are its state).

        `start`, a `position()` of an earlier run over the same files with the same settings,
        continues that run: what follows is what that run yielded after that position.
        """
        if self.started:
            raise RuntimeError("this pipeline has already run; make a new one for another pass")
        self.started = True
        if start is not None:
            self.packer.load_state(start["packer"])
            self.text_counts = {path: list(counts) for path, counts in start["text"].items()}
            progress = self.progress
            progress.documents, progress.tokens, progress.bytes = start["progress"]
        log.info(
            "packing %d files (%.1f MB) with %s on %d workers, blocks of %d",
            len(self.files),
            self.progress.total_bytes / 1e6,
            self.encoder.name,
            self.encoder.workers,
            self.pack.block_size,
        )
        started = time.perf_counter()
        first = self._start
        guard, tuner = self.guard, self.tuner
        reader = threaded(self._read(start, first), READ_AHEAD, "reader", lambda: guard.in_flight)
        encoded = threaded(
            self.encoder.map(reader), ENCODE_AHEAD, "encoder", lambda: guard.in_flight
        )
        paths = [file.path for file in self.files]
        file, record = first.file, first.record
        pending: list[BlockBatch] = []
        try:
            for batch, ids, offsets in encoded:
                self._at = self._marks.popleft()
                if self._at[2] is None:
                    # The end of a followed file: all its documents are packed now.
                    self.watcher.consumed(batch.path)
                    continue
                counts = self.text_counts.setdefault(batch.path, [0, 0, 0])
                counts[0] += len(batch)
                counts[1] += sum(map(len, batch.texts))
                counts[2] += len(ids)
                if self.on_position is not None:
                    if paths[file] != batch.path:
                        file, record = paths.index(batch.path, file + 1), 0
                    self.on_position(StreamPosition(file, record, self.packer.position))
                    record += len(batch)
                self.progress.update(len(batch), len(ids) + len(batch) * self._frame, batch.nbytes)
                tuner.observe(self._at[4], len(batch), len(ids))
                guard.check(batch.nbytes)
                blocks = self.packer.add(ids, offsets)
                if blocks is not None:
                    pending.append(blocks)
                # Blocks go out once per read batch, as they did before read batches were cut:
                # shards end at the same blocks, and journal positions at read batch ends,
                # whatever the tokenizer batch size.
                if pending and self._at[3] == 0:
                    if self.first_block_seconds is None:
                        self.first_block_seconds = time.perf_counter() - started
                    yield join_blocks(pending)
                    pending = []
            if pending:
                yield join_blocks(pending)
            self._at = None
            tail = self.packer.finish()
            if tail is not None:
                if self.first_block_seconds is None:
                    self.first_block_seconds = time.perf_counter() - started
                yield tail
        finally:
            if self.watcher is not None:
                # First: the reader may be waiting for files, and the stages close in turn.
                self.watcher.stop()
            encoded.close()
            reader.close()
            self.encoder.close()
            self.seconds = time.perf_counter() - started
            self._fill_report()
            log.info(
                "read %d documents, %d tokens, %d blocks in %.2f s",
                self.packer.documents,
                self.packer.tokens,
                self.packer.blocks,
                self.seconds,
            )

    def _read(self, start: dict | None, first: StreamPosition) -> Iterator[RecordBatch]:
        """The record batches, each with its mark; from `start` on when it is given, else from
        `first` (`start_at`'s position; marks are then counted from there).

        A resumed run reads the file it stopped in again from its start and passes over the
        batches packed before (reading costs a fraction of encoding), then takes the report's
        state as it was there: the report has seen that file's first batches once.
        TODO(issue 6): an uncompressed text or JSON-lines file could be entered at the byte
        offset of the batch instead; today up to one whole file is read again (no encoding).
        """
        if self.watcher is not None:
            yield from self._follow()
            return
        index = {file.path: i for i, file in enumerate(self.files)}
        if start is not None:
            first_file, skip = start["file"], start["batch"]
            batches = read_batches(self.files[first_file:], self.read, self.report)
        else:
            first_file, skip = first.file, 0
            batches = read_batches(self.files[first_file:], self.read, self.report)
            if first.record:
                batches = skip_documents(batches, first.record)
        current, count = None, 0
        for batch in batches:
            if batch.path != current:
                current, count = batch.path, 0
            count += 1
            if skip:
                if index[batch.path] != first_file:
                    break
                if count == skip:
                    self.report.load_state(start["report"])
                    skip = 0
                continue
            yield from self._cut(batch, index[batch.path], count)
        if skip:
            raise SourceError(
                f"{self.files[first_file].path}: holds fewer documents than when the build "
                f"started, so the build cannot continue; build it again with --overwrite"
            )

    def stop(self) -> None:
        """End a followed run: the files read so far are packed, then the tail (as `remainder`
        says), and the iteration ends. Safe to call from another thread."""
        if self.watcher is not None:
            self.watcher.stop()

    def _follow(self) -> Iterator[RecordBatch]:
        """The batches of each file as the watcher hands it out, then an empty batch marking
        the file's end (mark None), on which the consumer records the file as consumed."""
        for file in self.watcher.files():
            index = len(self.files)
            self.files.append(file)
            self.progress.total_bytes += file.size
            path, count = file.path, 0
            for batch in read_batches([file], self.read, self.report):
                count += 1
                yield from self._cut(batch, index, count)
            self._marks.append((index, count, None, 1, 0))
            yield RecordBatch(path, [], np.empty(0, np.int64), 0)

    def _cut(self, batch: RecordBatch, file: int, count: int) -> Iterator[RecordBatch]:
        """The tokenizer batches of read batch `count` of file `file`, each with its mark:
        `(file, count, report mark, documents of the read batch done or 0 when all are, the
        tuner's size it was cut at)`."""
        mark = self.report.mark()
        within = 0
        # Sampled here too: the reader fills the queues before the first batch is packed.
        self.guard.check(batch.nbytes)
        size = self.tuner.size(batch.nbytes)
        cap = self.guard.cap()
        for piece in split_batch(
            batch, size if cap is None else min(size, cap), self.read.batch_size
        ):
            within += len(piece)
            # 0: the read batch is done, and a run continued here passes over all of it.
            self._marks.append((file, count, mark, within if within < len(batch) else 0, size))
            yield piece

    def position(self) -> dict | None:
        """Where the run stands after the latest batch it packed, for `blocks(start=...)`; None
        before the first batch, inside a read batch (blocks are yielded at their ends only) and
        once the tail is being packed. Arrays stay numpy arrays."""
        if self._at is None or self._at[3]:
            return None
        file, batch, mark = self._at[:3]
        progress = self.progress
        return {
            "file": file,
            "batch": batch,
            "report": self.report.state_at(mark),
            "packer": self.packer.state(),
            "text": {path: list(counts) for path, counts in self.text_counts.items()},
            "progress": [progress.documents, progress.tokens, progress.bytes],
        }

    @property
    def _frame(self) -> int:
        return len(self.packer.prefix) + len(self.packer.suffix)

    def _fill_report(self) -> None:
        packer = self.packer
        seconds = max(self.seconds, 1e-9)
        self.report.values.update(
            documents=packer.documents,
            tokens=packer.tokens,
            blocks=packer.blocks,
            block_size=self.pack.block_size,
            packing=self.pack.packing,
            remainder=self.pack.remainder,
            dropped_tokens=packer.dropped_tokens,
            padded_tokens=packer.padded_tokens,
            truncated_tokens=packer.truncated_tokens,
            seconds=round(seconds, 3),
            tokenizer_load_seconds=round(self.tokenizer_seconds, 3),
            backend_setup_seconds=round(self.backend_seconds, 3),
            first_block_seconds=None
            if self.first_block_seconds is None
            else round(self.first_block_seconds, 3),
            tokens_per_second=round(packer.tokens / seconds),
            megabytes_per_second=round(self.progress.bytes / seconds / 1e6, 2),
            peak_rss_mb=round(peak_rss_mb(), 1),
            max_memory_mb=self.guard.report()["max_memory_mb"],
            backpressure_events=self.guard.events,
            **self.tuner.report(self.read.batch_size),
            backend=self.encoder.name,
            workers=self.encoder.workers,
            tokenizer=self.tokenizer.name,
        )
