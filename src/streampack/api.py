"""The Python entry points: `stream` (blocks, nothing written), `pack` (a token store) and
`stream_sft` (padded SFT batches, from `sft/stream.py`)."""

import json
import logging
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version

from .config import PackConfig, ReadConfig, TokenizeConfig
from .engine import Pipeline, peak_rss_mb
from .errors import DataError
from .pack import block_samples
from .report import nothing_used
from .sft.stream import SFTStream, stream_sft
from .sources import source_names
from .store import StoreWriter, choose_dtype
from .store.format import REPORT
from .store.journal import fingerprint, tokenizer_facts
from .tokenize import LoadedTokenizer

log = logging.getLogger(__name__)

__all__ = ["BlockStream", "SFTStream", "pack", "stream", "stream_sft"]


def _pipeline(sources, tokenizer, settings: dict) -> Pipeline:
    """A pipeline from the keyword settings of `stream` and `pack`, each sent to its config."""
    if settings.get("batch_size") == "auto":
        settings = {**settings, "batch_size": None}
    read = ReadConfig(
        **{name: settings[name] for name in ReadConfig.__dataclass_fields__ if name in settings}
    )
    pack = PackConfig(**{name: settings[name] for name in PackConfig.__dataclass_fields__})
    loaded = tokenizer if isinstance(tokenizer, LoadedTokenizer) else None
    tokenize = TokenizeConfig(
        tokenizer=None if tokenizer is None or loaded is not None else str(tokenizer),
        backend=settings["backend"],
        workers=settings["workers"],
        eos_token=settings["eos_token"],
    )
    follow = None
    if settings.get("follow"):
        follow = {name: settings[name] for name in ("settle", "poll")}
        follow["state"] = settings["follow_state"]
    return Pipeline(
        sources,
        read,
        pack,
        tokenize,
        tokenizer=loaded,
        max_memory=settings["max_memory"],
        follow=follow,
    )


class BlockStream:
    """Iterating yields one block at a time as a dict of int64 numpy arrays of `block_size`:
    `input_ids`, `labels` (-100 on padding), `attention_mask` and, with `position_ids="reset"`,
    `position_ids`. `batches()` yields the same as 2-D arrays, one encoded batch at a time.

    Every iteration is a new pass over the sources (one epoch) that yields the same blocks; the
    tokenizer is loaded once. `report` holds the counts of the latest pass.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    @property
    def tokenizer(self) -> LoadedTokenizer:
        return self.pipeline.tokenizer

    @property
    def report(self) -> dict:
        return self.pipeline.report.as_dict()

    def _fresh(self) -> Pipeline:
        used = self.pipeline
        if used.started:
            self.pipeline = Pipeline(
                used.sources,
                used.read,
                used.pack,
                used.tokenize,
                tokenizer=used.tokenizer,
                max_memory=used.max_memory,
                follow=used.follow_settings,
            )
        return self.pipeline

    def stop(self) -> None:
        """End a `follow=True` stream (from any thread): what was read is packed and yielded,
        then the iteration ends."""
        self.pipeline.stop()

    def batches(self) -> Iterator[dict]:
        pipeline = self._fresh()
        with_positions = pipeline.pack.position_ids == "reset"
        for batch in pipeline.blocks():
            yield block_samples(batch, with_positions)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.batches():
            for index in range(len(batch["input_ids"])):
                yield {key: value[index] for key, value in batch.items()}


def stream(
    sources,
    tokenizer: str | LoadedTokenizer | None = None,
    block_size: int = 1024,
    *,
    packing: bool = True,
    remainder: str = "drop",
    position_ids: str = "none",
    backend: str = "auto",
    workers: int = 0,
    eos_token: str | None = None,
    doc_mode: str = "line",
    text_field: str | None = None,
    format: str | None = None,
    batch_bytes: int = 4 << 20,
    batch_size: int | str = "auto",
    max_memory: int | None = None,
    on_error: str = "skip",
    encoding: str = "utf-8",
    encoding_errors: str = "replace",
    max_document_bytes: int | None = None,
    oversize: str = "split",
    follow: bool = False,
    settle: float = 2.0,
    poll: float = 0.5,
    follow_state=None,
) -> BlockStream:
    """Stream packed blocks from `sources` (files, folders, globs) without writing anything.

    >>> for block in streampack.stream("corpus/", block_size=2048):
    ...     train_step(block["input_ids"])

    Bad records are counted in `report` (`on_error="skip"`) or stop the run with a `DataError`
    naming the file and line (`on_error="raise"`); see `ReadConfig` for the other settings.
    `batch_size` is documents per tokenizer batch, or `auto`; `max_memory` the memory guard's
    budget in bytes (None: half the machine's or the cgroup's memory; 0: no guard): over it
    for good, a `MemoryBudgetError` stops the run.

    `follow=True` keeps watching the source folders: a file is read once it is complete (a
    name not `*.tmp`, `*.partial`, `*.part` or hidden, and size and time unchanged for `settle`
    seconds, polled every `poll`), each once, in the order they appear; `follow_state`, a JSON
    file, keeps the consumed files across restarts. `stop()` (or Ctrl-C) ends the stream.
    """
    settings = dict(locals())
    return BlockStream(_pipeline(settings.pop("sources"), settings.pop("tokenizer"), settings))


def pack(
    sources,
    output,
    tokenizer: str | LoadedTokenizer | None = None,
    block_size: int = 1024,
    *,
    packing: bool = True,
    remainder: str = "drop",
    position_ids: str = "none",
    backend: str = "auto",
    workers: int = 0,
    eos_token: str | None = None,
    doc_mode: str = "line",
    text_field: str | None = None,
    format: str | None = None,
    batch_bytes: int = 4 << 20,
    batch_size: int | str = "auto",
    max_memory: int | None = None,
    on_error: str = "skip",
    encoding: str = "utf-8",
    encoding_errors: str = "replace",
    max_document_bytes: int | None = None,
    oversize: str = "split",
    overwrite: bool = False,
    append: bool = False,
    shard_bytes: int = 256 << 20,
    token_stats: bool = True,
    on_progress: Callable | None = None,
    engine: str = "local",
    split_bytes: int | None = None,
    num_nodes: int = 1,
    node_rank: int = 0,
    ray_address: str | None = None,
) -> dict:
    """Pack `sources` into a token store at `output`; returns the run's report.

    The settings are those of `stream`; nothing is committed when a `DataError` stops the run.
    A killed build run again with the same arguments continues from its last committed shard
    and writes the same store; `append=True` adds the blocks of `sources` after those of the
    store at `output`. `token_stats` counts every stored token id (`streampack stats`).
    `engine="ray"`, `split_bytes`, `num_nodes` and `node_rank` build from a task split instead
    (`streampack.scale`, see the README's Scale-out section).
    """
    settings = dict(locals())
    if engine != "local" or split_bytes is not None or num_nodes != 1:
        from .scale import pack_split

        return pack_split(settings)
    started = time.perf_counter()
    pipeline = _pipeline(sources, tokenizer, settings)
    loaded = pipeline.tokenizer
    if on_progress is not None:
        pipeline.progress.listeners.append(on_progress)
    timeline = Timeline()
    pipeline.progress.listeners.append(timeline)
    dtype = choose_dtype(loaded.vocab_size)
    try:
        writer = StoreWriter(
            output,
            block_size=block_size,
            dtype=dtype,
            overwrite=overwrite,
            shard_bytes=shard_bytes,
            fingerprint=fingerprint(
                pipeline,
                dtype=dtype,
                shard_bytes=shard_bytes,
                token_stats=token_stats,
                append=append,
            ),
            append=append,
            vocab_size=loaded.vocab_size if token_stats else None,
        )
    except BaseException:
        pipeline.encoder.close()
        raise
    if writer.done:
        pipeline.encoder.close()
        return json.loads((writer.path / REPORT).read_text(encoding="utf-8"))
    writer.position = pipeline.position
    try:
        for batch in pipeline.blocks(start=writer.resume):
            writer.write(batch)
        _check_output(pipeline)
    except BaseException:
        writer.abort()
        raise
    report = pipeline.report.as_dict()
    report.update(
        total_seconds=round(time.perf_counter() - started, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        store=str(output),
        timeline=timeline.points,
    )
    if writer.resumed:
        # The one key of report.json that an uninterrupted build does not have.
        report["resumed"] = {
            "after_shards": writer.resume_shards,
            "after_blocks": writer.resume_blocks,
        }
    writer.commit(_metadata(pipeline, report, writer), report)
    return report


class Timeline:
    """A progress listener keeping `[seconds, tokens, tokens per second]` through the run, at
    most `limit` points: every other point is dropped and the spacing doubled when full."""

    def __init__(self, every: float = 0.5, limit: int = 400) -> None:
        self.every, self.limit = every, limit
        self.points: list[list] = []
        self._started = time.perf_counter()
        self._last = (0.0, 0)

    def __call__(self, progress) -> None:
        now = time.perf_counter() - self._started
        last_time, last_tokens = self._last
        if now - last_time < self.every:
            return
        rate = (progress.tokens - last_tokens) / (now - last_time)
        self.points.append([round(now, 3), progress.tokens, round(rate)])
        self._last = (now, progress.tokens)
        if len(self.points) >= self.limit:
            self.points = self.points[1::2]
            self.every *= 2


def pack_follow(
    sources, output, *, settle: float = 2.0, poll: float = 0.5, stop=None, **settings
) -> int:
    """`pack` that keeps watching `sources`: the files complete at each look are packed into
    `output` as one append (the first as a new build), each file once, in the order they
    appeared; the consumed files are those the store's metadata lists, so a restart goes on
    with what is new. An append that was interrupted is finished first. Runs until `stop` (a
    `threading.Event`) is set or Ctrl-C; returns the number of appends made.

    Each append ends with its own final partial block, which `remainder` drops or pads.
    """
    from pathlib import Path

    from .sources.follow import FollowState, Watcher
    from .store import journal
    from .store.format import METADATA
    from .tokenize import load_tokenizer

    output = Path(output)
    tokenizer = settings.pop("tokenizer", None)
    if not isinstance(tokenizer, LoadedTokenizer):
        tokenizer = load_tokenizer(tokenizer, settings.get("eos_token"))
    if settings.get("overwrite") or settings.get("append"):
        raise ValueError("pack --follow appends by itself: leave out overwrite and append")
    appends = 0
    if (output / journal.JOURNAL).is_file():
        saved = journal.load(output)["fingerprint"]
        log.info("finishing the interrupted pack of %d files first", len(saved["sources"]))
        pack(saved["sources"], output, tokenizer, append=saved["mode"] == "append", **settings)
        appends += 1
    state = FollowState()
    if (output / METADATA).is_file():
        for entry in json.loads((output / METADATA).read_text(encoding="utf-8"))["files"]:
            state.files[entry["path"]] = {"size": entry["bytes"], "mtime_ns": None}
    names = source_names(sources)
    watcher = Watcher(names, state, settle=settle, poll=poll, format=settings.get("format"))
    if stop is not None:
        import threading

        threading.Thread(target=lambda: (stop.wait(), watcher.stop()), daemon=True).start()
    while True:
        files = watcher.wait_ready()
        if not files:
            return appends
        paths = [file.path for file in files]
        append = (output / METADATA).is_file()
        try:
            pack(paths, output, tokenizer, append=append, **settings)
        except DataError as error:
            log.warning("%s; these files are passed over", error)
            continue
        appends += 1
        log.info("packed %d new files into %s", len(paths), output)


def _check_output(pipeline: Pipeline) -> None:
    """A run that packed nothing is an error, not an empty store; a run with no block, a warning."""
    report = pipeline.report.as_dict()
    if report["documents"] == 0:
        raise DataError(nothing_used(pipeline.sources, report, "documents"))
    if report["blocks"] == 0:
        log.warning(
            "all %d tokens fit in less than one block of %d and were dropped; use --remainder pad "
            "or a smaller --block-size",
            report["tokens"],
            report["block_size"],
        )


def _metadata(pipeline: Pipeline, report: dict, writer: StoreWriter) -> dict:
    """The store's metadata but for what the writer adds (dtype, blocks, shards, counts); after
    an append, the store's counts and lists with this run's added."""
    counts = pipeline.text_counts
    files = []
    for file in pipeline.files:
        documents, characters, tokens = counts.get(file.path, (0, 0, 0))
        files.append(
            {
                "path": file.path,
                "bytes": file.size,
                "documents": documents,
                "characters": characters,
                "tokens": tokens,
            }
        )
    run = {
        "documents": report["documents"],
        "tokens": report["tokens"],
        "padded_tokens": report["padded_tokens"],
        "dropped_tokens": report["dropped_tokens"],
        "truncated_tokens": report["truncated_tokens"],
        "skipped_records": sum(entry["count"] for entry in report["skipped"].values()),
    }
    read = {
        "doc_mode": pipeline.read.doc_mode,
        "text_field": pipeline.read.text_field,
        "format": pipeline.read.format,
        "on_error": pipeline.read.on_error,
        "encoding": pipeline.read.encoding,
        "encoding_errors": pipeline.read.encoding_errors,
        "max_document_bytes": pipeline.read.max_document_bytes,
        "oversize": pipeline.read.oversize,
    }
    base = writer.base
    if base is not None:
        appended = {
            "created": writer.started,
            "streampack_version": version("streampack"),
            "sources": pipeline.sources,
            "first_block": base["blocks"],
            "blocks": report["blocks"],
            **run,
            "backend": report["backend"],
            "read": read,
        }
        kept = {key: value for key, value in base.items() if key not in _WRITER_KEYS}
        return {
            **kept,
            **{key: base[key] + value for key, value in run.items()},
            "sources": base["sources"] + pipeline.sources,
            "files": base["files"] + files,
            "appends": [*base.get("appends", ()), appended],
        }
    return {
        "streampack_version": version("streampack"),
        # When the build started: a resumed build keeps the time of its first run.
        "created": writer.started,
        "tokenizer": tokenizer_facts(pipeline.tokenizer),
        "backend": report["backend"],
        "packing": pipeline.pack.packing,
        "remainder": pipeline.pack.remainder,
        "position_ids": pipeline.pack.position_ids,
        "read": read,
        # With the keys above, what `streampack pack --like STORE` needs to run this build again.
        "eos_token": pipeline.tokenize.eos_token,
        "shard_bytes": writer.shard_bytes,
        **run,
        "sources": pipeline.sources,
        "files": files,
    }


# Keys of metadata.json that StoreWriter.commit writes itself.
_WRITER_KEYS = {
    "format",
    "version",
    "dtype",
    "block_size",
    "blocks",
    "doc_ends",
    "shards",
    "token_counts",
}
