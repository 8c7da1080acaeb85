"""A split build: plan the units, run them on an engine, commit one store (or one node's part).

    discover ──► plan_split ──► units (this node's: index % num_nodes == node_rank)
        ──► engine: local (one after another, here) or ray (tasks on a cluster)
        ──► commit: shards in unit order, leftovers joined, one index + metadata

The same split gives the same store on any engine and any cluster size.
"""

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .. import errors
from ..config import PackConfig, ReadConfig, TokenizeConfig
from ..engine import Progress, peak_rss_mb
from ..errors import ConfigError, DataError, StreampackError
from ..report import Report, nothing_used
from ..sources import discover, source_names
from ..store import choose_dtype
from ..store import format as layout
from ..store.writer import write_atomic
from ..tokenize import LoadedTokenizer, load_tokenizer, make_encoder
from .commit import (
    BuildFolder,
    UnitOutput,
    count_attempts,
    line_offsets,
    place_shards,
    store_metadata,
    units_table,
    write_tail,
)
from .reports import join_states, shift_location
from .split import Unit, check_split_bytes, fingerprint, lines_before, plan_split
from .unit import FAIL_ONCE_ENV, UnitJob, pack_unit

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
# About this many bytes of source per unit by default: a few seconds of work per task on one
# core, so that a task's fixed cost (about a millisecond in Ray) is noise and the leftovers the
# driver holds stay small.
DEFAULT_SPLIT_BYTES = 64 << 20


class LocalRunner:
    """Runs units one after another in this process, with one tokenizer and encoder."""

    name = "local"

    def __init__(self, tokenizer: LoadedTokenizer, tokenize: TokenizeConfig) -> None:
        self.tokenizer = tokenizer
        self.encoder = make_encoder(tokenizer, tokenize.backend, tokenize.workers)
        self.stop_after: int | None = None

    def run(self, units: list[Unit], job: UnitJob):
        for unit in units:
            if self.stop_after is not None and unit.index > self.stop_after:
                return
            yield pack_unit(unit, job, self.tokenizer, self.encoder)

    def close(self) -> None:
        self.encoder.close()


def _configs(settings: dict) -> tuple[ReadConfig, PackConfig, TokenizeConfig]:
    chosen = {name: settings[name] for name in ReadConfig.__dataclass_fields__ if name in settings}
    if chosen.get("batch_size") == "auto":
        # None is "auto" to the readers, as in `api._pipeline`.
        chosen["batch_size"] = None
    read = ReadConfig(**chosen)
    pack = PackConfig(**{name: settings[name] for name in PackConfig.__dataclass_fields__})
    spec = settings["tokenizer"]
    tokenize = TokenizeConfig(
        tokenizer=None if spec is None or isinstance(spec, LoadedTokenizer) else str(spec),
        backend=settings["backend"],
        workers=settings["workers"],
        eos_token=settings["eos_token"],
    )
    return read, pack, tokenize


def check_scale_settings(engine: str, split_bytes: int | None, num_nodes: int, node_rank: int):
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, found {engine!r}")
    if split_bytes is not None:
        check_split_bytes(split_bytes)
    if num_nodes < 1:
        raise ConfigError(f"num_nodes must be 1 or more, found {num_nodes}")
    if not 0 <= node_rank < num_nodes:
        raise ConfigError(
            f"node_rank must be in 0..{num_nodes - 1} for num_nodes {num_nodes}, found {node_rank}"
        )


def pack_split(settings: dict) -> dict:
    """`api.pack` with `engine`, `split_bytes`, `num_nodes`, `node_rank`: see the README."""
    from ..api import _metadata

    started = time.perf_counter()
    engine, num_nodes, node_rank = settings["engine"], settings["num_nodes"], settings["node_rank"]
    check_scale_settings(engine, settings["split_bytes"], num_nodes, node_rank)
    if settings.get("append"):
        raise ConfigError(
            "append adds to a store built on one machine; a split build (--engine ray, "
            "--split-mb, --num-nodes) writes a new store"
        )
    split_bytes = settings["split_bytes"] or DEFAULT_SPLIT_BYTES
    read, pack, tokenize = _configs(settings)
    if engine == "ray" and tokenize.workers == 0:
        # A Ray task encodes on the CPUs it asked Ray for: one unless --workers says more.
        tokenize = replace(tokenize, workers=1)
    raw = settings["sources"]
    sources = source_names(raw)
    report = Report(read.on_error)
    files = discover(sources, report, read.format)
    loaded_at = time.perf_counter()
    given = settings["tokenizer"] if isinstance(settings["tokenizer"], LoadedTokenizer) else None
    tokenizer = given or load_tokenizer(tokenize.tokenizer, tokenize.eos_token)
    tokenizer_seconds = time.perf_counter() - loaded_at
    units = plan_split(files, read, split_bytes)
    mine = [unit for unit in units if unit.index % num_nodes == node_rank]
    log.info(
        "split %d files into %d units of up to %.1f MB; building %d of them (node %d of %d)",
        len(files),
        len(units),
        split_bytes / 1e6,
        len(mine),
        node_rank,
        num_nodes,
    )
    dtype = choose_dtype(tokenizer.vocab_size)
    build = BuildFolder(settings["output"], settings["overwrite"])
    job = UnitJob(
        read=read,
        pack=pack,
        tokenize=tokenize,
        folder=str(build.path.resolve()),
        dtype=dtype.str,
        shard_bytes=settings["shard_bytes"],
        tokenizer=given,
        fail_once=os.environ.get(FAIL_ONCE_ENV) or None,
    )
    progress = Progress(total_bytes=sum(unit.size for unit in mine))
    if settings.get("on_progress") is not None:
        progress.listeners.append(settings["on_progress"])
    try:
        if engine == "ray":
            from .ray_engine import RayRunner

            runner = RayRunner(
                address=settings.get("ray_address"),
                num_cpus=settings.get("ray_cpus"),
                task_cpus=max(1, tokenize.workers),
                max_in_flight=settings.get("max_in_flight"),
            )
        else:
            runner = LocalRunner(tokenizer, tokenize)
        run_started = time.perf_counter()
        try:
            results = _run(runner, mine, job, progress)
        finally:
            runner.close()
        run_seconds = time.perf_counter() - run_started
        attempts = count_attempts(build.path)
        outputs = [_output(unit, results[unit.index], build.path, attempts) for unit in mine]
        # What `api._metadata` reads of a pipeline and a store writer. A split build has no
        # per-source character counts, no journal and no base store to append to.
        shim = SimpleNamespace(
            tokenizer=tokenizer,
            pack=pack,
            read=read,
            tokenize=tokenize,
            sources=sources,
            files=files,
            text_counts={},
        )
        writer_shim = SimpleNamespace(
            base=None,
            started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            shard_bytes=settings["shard_bytes"],
        )
        context = {
            "sources": sources,
            "pack": pack,
            "pad_id": tokenizer.pad_id,
            "tokenizer_name": tokenizer.name,
            "files_skipped": list(report.files_skipped),
            "split": {"split_bytes": split_bytes, "fingerprint": fingerprint(units, split_bytes)},
            "units_total": len(units),
            "part": {"index": node_rank, "count": num_nodes} if num_nodes > 1 else None,
            "engine": runner.name,
            "seconds": run_seconds,
            "tokenizer_seconds": tokenizer_seconds,
            "started": started,
        }
        result = commit(
            build, outputs, dtype, context, lambda done: _metadata(shim, done, writer_shim)
        )
    except BaseException:
        build.abort()
        raise
    return result


def _run(runner, units: list[Unit], job: UnitJob, progress: Progress) -> dict[int, dict]:
    """Every unit's result by index; the first data error in unit order is raised, with its line
    as a line of the file."""
    by_index = {unit.index: unit for unit in units}
    results: dict[int, dict] = {}
    failed: dict | None = None
    for result in runner.run(units, job):
        if result["error"] is not None:
            if failed is None or result["index"] < failed["index"]:
                failed = result
                runner.stop_after = result["index"]
            continue
        results[result["index"]] = result
        progress.update(result["documents"], result["tokens"], result["bytes"])
    if failed is not None:
        unit = by_index[failed["index"]]
        start = unit.start if unit.kind == "bytes" else 0
        message = shift_location(failed["error"], unit.path, lines_before(unit), start)
        kind = getattr(errors, failed["error_type"], StreampackError)
        if not (isinstance(kind, type) and issubclass(kind, StreampackError)):
            kind = StreampackError
        raise kind(message)
    return results


def _output(unit: Unit, result: dict, folder: Path, attempts: dict[str, int]) -> UnitOutput:
    return UnitOutput(
        unit=unit,
        folder=folder,
        shards=result["shards"],
        ends_base=0,
        leftover=result["leftover"],
        leftover_ends=result["leftover_ends"],
        documents=result["documents"],
        tokens=result["tokens"],
        padded_tokens=result["padded_tokens"],
        truncated_tokens=result["truncated_tokens"],
        lines=result["lines"],
        bytes=result["bytes"],
        seconds=result["seconds"],
        attempts=max(1, attempts.get(unit.name, 1)),
        report=result["report"],
        backend=result["backend"],
        workers=result["workers"],
        peak_rss_mb=result["peak_rss_mb"],
    )


def commit(
    build: BuildFolder, outputs: list[UnitOutput], dtype, context: dict, metadata_of
) -> dict:
    """Write the store (or part) from its units; `metadata_of(report)` gives the metadata's
    description of the build. Returns the report, which is also written as `report.json`."""
    pack = context["pack"]
    size = pack.block_size
    part = context["part"]
    shards, blocks, copied = place_shards(build.path, outputs, size)
    # A part keeps every leftover token (its last block padded) for the merge to join them.
    tail_remainder = "pad" if part is not None else pack.remainder
    tail, tail_counts = write_tail(
        build.path, outputs, blocks, size, tail_remainder, dtype, context["pad_id"]
    )
    offsets = line_offsets(outputs)
    joined = join_states(
        [
            (out.report, out.unit.path, lines, out.unit.start if out.unit.kind == "bytes" else 0)
            for out, lines in zip(outputs, offsets, strict=True)
        ]
    )
    report = _report(outputs, joined, context, blocks, tail, tail_counts, size)
    if copied:
        report["copied_files"] = copied
    report.update(context.get("extra", {}))
    if part is None and report["documents"] == 0:
        raise DataError(nothing_used(context["sources"], report, "documents"))
    if report["blocks"] == 0 and part is None:
        log.warning(
            "all %d tokens fit in less than one block of %d and were dropped; use --remainder pad "
            "or a smaller --block-size",
            report["tokens"],
            size,
        )
    base = metadata_of(report)
    base["split"] = {
        **context["split"],
        "units": context["units_total"],
        "tail_first_block": blocks,
        "tail_shards": [entry["name"] for entry in tail],
    }
    if part is not None:
        base["part"] = {**part, "tail": "padded, for the merge to join"}
    base["units"] = units_table(outputs, size)
    metadata = store_metadata(base, dtype, size, shards + tail)
    report["total_seconds"] = round(time.perf_counter() - context["started"], 3)
    report["store"] = str(build.target)
    write_atomic(build.path / layout.REPORT, _dumps(report))
    write_atomic(build.path / layout.METADATA, _dumps(metadata))
    build.finish()
    log.info(
        "committed %s: %d blocks from %d units (%d retries)",
        build.target,
        metadata["blocks"],
        len(outputs),
        report["retries"],
    )
    return report


def _report(outputs, joined, context, blocks, tail, tail_counts, size) -> dict:
    documents = sum(out.documents for out in outputs)
    tokens = sum(out.tokens for out in outputs)
    seconds = max(context["seconds"], 1e-9)
    nbytes = sum(out.bytes for out in outputs)
    pack = context["pack"]
    values = {
        "documents": documents,
        "tokens": tokens,
        "blocks": blocks + sum(entry["blocks"] for entry in tail),
        "block_size": size,
        "packing": pack.packing,
        "remainder": pack.remainder,
        "dropped_tokens": tail_counts["dropped_tokens"],
        "padded_tokens": sum(out.padded_tokens for out in outputs) + tail_counts["padded_tokens"],
        "truncated_tokens": sum(out.truncated_tokens for out in outputs),
        "seconds": round(seconds, 3),
        "tokenizer_load_seconds": round(context["tokenizer_seconds"], 3),
        "backend_setup_seconds": 0.0,
        "first_block_seconds": None,
        "tokens_per_second": round(tokens / seconds),
        "megabytes_per_second": round(nbytes / seconds / 1e6, 2),
        "peak_rss_mb": round(max([peak_rss_mb()] + [out.peak_rss_mb for out in outputs]), 1),
        "backend": outputs[0].backend if outputs else "none",
        "workers": outputs[0].workers if outputs else 0,
        "tokenizer": context["tokenizer_name"],
        "engine": context["engine"],
        "split_bytes": context["split"]["split_bytes"],
        "units": len(outputs),
        "units_total": context["units_total"],
        "retries": sum(out.attempts - 1 for out in outputs),
        "task_seconds": round(sum(out.seconds for out in outputs), 3),
        "leftover_tokens": tail_counts["leftover_tokens"],
    }
    if context["part"] is not None:
        values.update(node_rank=context["part"]["index"], num_nodes=context["part"]["count"])
    return {
        **values,
        **joined,
        "files_skipped": context["files_skipped"],
        "unit_reports": [
            {
                "index": out.unit.index,
                "attempts": out.attempts,
                "seconds": out.seconds,
                "lines": out.lines,
                "bytes": out.bytes,
                "report": out.report,
            }
            for out in outputs
        ],
    }


def _dumps(value: dict) -> bytes:
    import json

    return (json.dumps(value, indent=2, ensure_ascii=False, default=_plain) + "\n").encode()


def _plain(value):
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
