"""Building one unit: read its bytes or rows, encode, pack, and write its shards into the store.

    unit ──► reader thread ──► encoder thread ──► packer ──► shards in STORE/.attempts/<attempt>/
                                                      └──► leftover (< one block) to the driver
    then the shards are renamed to their final names `shard-u<unit>-<k>` in STORE/

The unit is packed on its own (its own carry, one EOS per document) from the same stages as the
local engine. Its shards hold only full blocks; the tokens after its last full block are returned
to the driver, which joins the leftovers of all units in unit order at commit. Every attempt
writes under a name of its own and renames at the end, so an attempt that fails half way, or a
retry that runs beside a lost attempt, leaves at worst the same bytes under the same names.
"""

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import PackConfig, ReadConfig, TokenizeConfig
from ..engine import ENCODE_AHEAD, READ_AHEAD, peak_rss_mb, threaded
from ..errors import SourceError, StreampackError
from ..pack import Packer
from ..records import RecordBatch
from ..report import Report
from ..sources.compression import open_stream
from ..sources.oversize import cap_documents
from ..sources.progress import FileProgress
from ..sources.reader import _STREAM_READERS
from ..sources.tabular import read_parquet
from ..store import StoreWriter
from ..store import format as layout
from ..tokenize import LoadedTokenizer, load_tokenizer, make_encoder
from .reports import unit_state
from .split import Unit, count_breaks

log = logging.getLogger(__name__)

ATTEMPTS = ".attempts"
# Test hook: with this set to a folder, every unit fails once, after its shards are in place, the
# worst moment for a retry (a marker file per unit in the folder remembers the first attempt).
FAIL_ONCE_ENV = "STREAMPACK_TEST_FAIL_ONCE"


class InjectedFailure(RuntimeError):
    """The failure of `FAIL_ONCE_ENV`, raised like any crash so that the engine retries it."""


@dataclass(frozen=True)
class UnitJob:
    """What every unit of one build shares; sent once to each worker.

    Attributes:
        folder: the store folder being built (absolute; on a cluster, a shared path).
        tokenizer: the caller's loaded tokenizer, when one was given instead of a name.
        fail_once: see `FAIL_ONCE_ENV`.
    """

    read: ReadConfig
    pack: PackConfig
    tokenize: TokenizeConfig
    folder: str
    dtype: str
    shard_bytes: int
    tokenizer: LoadedTokenizer | None = None
    fail_once: str | None = None


def unit_shard_name(unit: Unit, k: int) -> str:
    return f"shard-{unit.name}-{k:03d}"


class RangeStream:
    """Bytes `[start, end)` of an uncompressed file, read like a `SourceStream`; counts the line
    breaks that pass through it, which tells the driver how many lines the unit spans."""

    codec = "none"

    def __init__(self, path: str, start: int, end: int) -> None:
        self.path = path
        self._start = start
        self._left = end - start
        self.breaks = 0
        self._after_cr = False
        try:
            self._raw = open(path, "rb")  # noqa: SIM115 (closed by `close`)
            self._raw.seek(start)
        except OSError as err:
            raise SourceError(f"{path}: cannot open: {err.strerror or err}") from err

    @property
    def position(self) -> int:
        return self._raw.tell() - self._start

    def read(self, size: int = -1) -> bytes:
        want = self._left if size is None or size < 0 else min(size, self._left)
        try:
            data = self._raw.read(want) if want else b""
        except OSError as err:
            raise SourceError(f"{self.path}: read failed: {err}") from err
        self._left -= len(data)
        if data:
            self.breaks += count_breaks(data, self._after_cr)
            self._after_cr = data[-1:] == b"\r"
        return data

    def close(self) -> None:
        self._raw.close()


def read_unit(unit: Unit, config: ReadConfig, report: Report, spans: dict) -> Iterator[RecordBatch]:
    """The documents of `unit`, as `read_batches` gives those of a whole file; `spans["lines"]`
    is set to the lines the unit's bytes hold once they are read."""
    report.on_error = config.on_error
    for batch in _read(unit, config, report, spans):
        if config.max_document_bytes is not None:
            batch = cap_documents(batch, config.max_document_bytes, config.oversize, report)
            if not batch.texts:
                continue
        yield batch


def _read(unit: Unit, config: ReadConfig, report: Report, spans: dict) -> Iterator[RecordBatch]:
    entry = report.add_file(unit.path, format=unit.format, codec=unit.codec)
    if unit.reader == "parquet":
        progress = FileProgress(report, unit.path, entry)
        groups = list(range(unit.start, unit.end)) if unit.kind == "rows" else None
        yield from read_parquet(unit.open_path, config, progress, groups)
        return
    reader = _STREAM_READERS[unit.reader]
    if unit.kind == "bytes":
        stream = RangeStream(unit.open_path, unit.start, unit.end)
        try:
            progress = FileProgress(report, unit.path, entry, stream)
            yield from reader(stream, config, progress)
            progress.finish()
        finally:
            stream.close()
        spans["lines"] = stream.breaks
        return
    with open_stream(unit.open_path, unit.codec) as stream:
        progress = FileProgress(report, unit.path, entry, stream)
        yield from reader(stream, config, progress)
        progress.finish()


def pack_unit(unit: Unit, job: UnitJob, tokenizer: LoadedTokenizer, encoder) -> dict:
    """Build `unit` into `job.folder`; returns what the driver needs to commit it.

    A `StreampackError` (bad data under `on_error="raise"`, an unreadable file) is returned as
    `error`, not raised: it would fail again on every retry. Anything else is raised, and the
    engine retries it.
    """
    started = time.perf_counter()
    folder = Path(job.folder)
    attempt = f"{unit.name}.{uuid.uuid4().hex[:12]}"
    attempts = folder / ATTEMPTS
    attempts.mkdir(exist_ok=True)
    # One marker per attempt: the driver counts them for `retries`, whatever ended an attempt.
    (attempts / attempt).touch()
    work = attempts / f"{attempt}.d"
    size = job.pack.block_size
    # Padding the unit's tail gives its leftover tokens and their document ends through the
    # packer's own API; the padded block itself is never written.
    packer = Packer(
        replace(job.pack, remainder="pad"),
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
        prefix=tokenizer.prefix,
        suffix=tokenizer.suffix,
    )
    report = Report(job.read.on_error)
    spans = {"lines": 0}
    writer = StoreWriter(
        work, block_size=size, dtype=np.dtype(job.dtype), shard_bytes=job.shard_bytes
    )
    nbytes = 0
    reader = threaded(read_unit(unit, job.read, report, spans), READ_AHEAD, "reader")
    encoded = threaded(encoder.map(reader), ENCODE_AHEAD, "encoder")
    try:
        for batch, ids, offsets in encoded:
            nbytes += batch.nbytes
            blocks = packer.add(ids, offsets)
            if blocks is not None:
                writer.write(blocks)
        tail = packer.finish()
        writer.commit({}, {})
    except StreampackError as error:
        writer.abort()
        shutil.rmtree(work, ignore_errors=True)
        return {"index": unit.index, "error": str(error), "error_type": type(error).__name__}
    except BaseException:
        writer.abort()
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        encoded.close()
        reader.close()
    leftover = np.empty(0, np.uint32)
    leftover_ends = np.empty(0, np.int64)
    padded, blocks = packer.padded_tokens, packer.blocks
    if tail is not None:
        length = int(tail.lengths[0])
        leftover = tail.tokens[0, :length].copy()
        leftover_ends = tail.doc_ends - tail.first_block * size
        padded -= size - length
        blocks -= 1
    shards = []
    for k, shard in enumerate(writer.shards):
        name = unit_shard_name(unit, k)
        # The tokens file last, as the store writer does: a shard whose .tokens exists is whole.
        for file_of in (layout.lengths_file, layout.doc_ends_file, layout.tokens_file):
            os.replace(work / file_of(shard["name"]), folder / file_of(name))
        shards.append({**shard, "name": name})
    shutil.rmtree(work, ignore_errors=True)
    if job.fail_once:
        marker = Path(job.fail_once) / unit.name
        if not marker.exists():
            marker.touch()
            raise InjectedFailure(f"{unit.name}: failing once, as {FAIL_ONCE_ENV} asks")
    return {
        "index": unit.index,
        "error": None,
        "attempt": attempt,
        "shards": shards,
        "blocks": blocks,
        "documents": packer.documents,
        "tokens": packer.tokens,
        "padded_tokens": padded,
        "truncated_tokens": packer.truncated_tokens,
        "leftover": leftover,
        "leftover_ends": leftover_ends,
        "lines": spans["lines"] if unit.kind == "bytes" else 0,
        "bytes": nbytes,
        "seconds": round(time.perf_counter() - started, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "report": unit_state(report),
        "backend": encoder.name,
        "workers": encoder.workers,
    }


# Per worker process: a tokenizer and its encoder, loaded by the first unit and kept for the
# next ones (loading the built-in tokenizer and verifying quicktok take a second or more).
_LOADED: dict = {}


def loaded_encoder(job: UnitJob):
    """(tokenizer, encoder) for `job`, made once per process."""
    spec = job.tokenize
    key = (
        job.tokenizer.path if job.tokenizer is not None else spec.tokenizer,
        spec.eos_token,
        spec.backend,
        spec.workers,
    )
    if key not in _LOADED:
        tokenizer = job.tokenizer or load_tokenizer(spec.tokenizer, spec.eos_token)
        _LOADED[key] = (tokenizer, make_encoder(tokenizer, spec.backend, spec.workers))
    return _LOADED[key]


def run_unit(unit: Unit, job: UnitJob) -> dict:
    """A unit in a worker process (a Ray task): the process's tokenizer and encoder, then
    `pack_unit`."""
    tokenizer, encoder = loaded_encoder(job)
    return pack_unit(unit, job, tokenizer, encoder)
