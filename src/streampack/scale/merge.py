"""Joining the store parts of a multi-node build (`--num-nodes N --node-rank R`) into one store.

Each part holds the full blocks of its units and, padded in its last blocks, every unit's
leftover tokens. The merge takes the units of all parts in unit order, hard-links their shard
files into the new store (a copy when the parts are on another file system), joins the leftovers
as a single-machine build of the same split does, writes one index and metadata, and verifies.
The result equals that single-machine build, byte for byte but for the timings.
"""

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from ..config import PackConfig
from ..errors import ConfigError, StoreError
from ..store import format as layout
from ..store.reader import read_metadata
from ..store.verify import verify_store
from .build import commit
from .commit import BuildFolder, UnitOutput
from .split import Unit

log = logging.getLogger(__name__)

# Settings every part must share: what the tokens mean and how the units were cut.
_SAME = ("format", "version", "tokenizer", "dtype", "block_size", "packing", "remainder")
_SAME += ("position_ids", "read", "sources", "files")
# Metadata keys describing one build's result, recounted for the merged store.
_COUNTED = ("documents", "tokens", "padded_tokens", "dropped_tokens", "truncated_tokens")


def merge_parts(parts, output, overwrite: bool = False, checksums: bool = False) -> dict:
    """Merge the store `parts` (folders) into `output`; returns the merged store's report.

    The merged store is verified (sizes, index, counts; with `checksums` also every shard's
    crc32, which reads all the tokens); a problem raises a `StoreError`.
    """
    started = time.perf_counter()
    parts = [Path(part) for part in parts]
    if not parts:
        raise ConfigError("merge needs at least one store part")
    loaded = [_load_part(part) for part in parts]
    _check_compatible(loaded)
    loaded.sort(key=lambda item: item[1]["part"]["index"])
    first_meta = loaded[0][1]
    outputs = sorted(
        (output for item in loaded for output in _unit_outputs(*item)),
        key=lambda unit_output: unit_output.unit.index,
    )
    total = first_meta["split"]["units"]
    if [o.unit.index for o in outputs] != list(range(total)):
        raise StoreError(
            f"the parts do not hold every unit of the split exactly once "
            f"(expected units 0..{total - 1}); build every node rank with the same sources"
        )
    pack = PackConfig(
        block_size=first_meta["block_size"],
        packing=first_meta["packing"],
        remainder=first_meta["remainder"],
        position_ids=first_meta["position_ids"],
    )
    first_report = loaded[0][2]
    context = {
        "sources": first_meta["sources"],
        "pack": pack,
        "pad_id": first_meta["tokenizer"]["pad_id"],
        "tokenizer_name": first_meta["tokenizer"]["name"],
        "files_skipped": first_report.get("files_skipped", []),
        "split": {
            "split_bytes": first_meta["split"]["split_bytes"],
            "fingerprint": first_meta["split"]["fingerprint"],
        },
        "units_total": total,
        "part": None,
        "engine": "merge",
        # The parts ran side by side: the build took as long as the slowest of them.
        "seconds": max(report.get("seconds", 0.0) for _, _, report in loaded),
        "tokenizer_seconds": 0.0,
        "started": started,
        "extra": {"merged_from": [str(part) for part, _, _ in loaded]},
    }

    def metadata_of(report: dict) -> dict:
        base = {
            key: value
            for key, value in first_meta.items()
            if key not in ("format", "version", "dtype", "block_size", "blocks", "doc_ends")
            and key not in ("shards", "split", "part", "units")
        }
        base.update({key: report[key] for key in _COUNTED})
        base["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        base["skipped_records"] = sum(entry["count"] for entry in report["skipped"].values())
        return base

    build = BuildFolder(output, overwrite)
    try:
        report = commit(build, outputs, np.dtype(first_meta["dtype"]), context, metadata_of)
    except BaseException:
        build.abort()
        raise
    problems = verify_store(output, checksums=checksums)
    if problems:
        shown = "; ".join(problems[:3])
        raise StoreError(f"{output}: the merged store does not verify: {shown}")
    log.info("merged %d parts into %s", len(parts), output)
    return report


def _load_part(path: Path) -> tuple[Path, dict, dict]:
    meta = read_metadata(path)
    if "part" not in meta:
        raise StoreError(
            f"{path}: not a store part (it was built without --num-nodes); merge joins the "
            f"parts of one build made with --num-nodes N --node-rank 0..N-1"
        )
    try:
        report = json.loads((path / layout.REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StoreError(f"{path / layout.REPORT}: cannot be read ({error})") from None
    return path, meta, report


def _check_compatible(loaded: list[tuple[Path, dict, dict]]) -> None:
    first_path, first, _ = loaded[0]
    for path, meta, _ in loaded[1:]:
        for key in _SAME:
            if meta.get(key) != first.get(key):
                raise StoreError(
                    f"{path}: {key} differs from {first_path} ({_short(meta.get(key))} against "
                    f"{_short(first.get(key))}); every part must be built with the same sources "
                    f"and settings"
                )
        for key in ("split_bytes", "fingerprint", "units"):
            if meta["split"][key] != first["split"][key]:
                raise StoreError(
                    f"{path}: split {key} differs from {first_path} ({meta['split'][key]} "
                    f"against {first['split'][key]}); build every part with the same --split-mb "
                    f"from the same files"
                )
        if meta["part"]["count"] != first["part"]["count"]:
            raise StoreError(
                f"{path}: part of {meta['part']['count']} nodes, {first_path} of "
                f"{first['part']['count']}; merge the parts of one build"
            )
    count = first["part"]["count"]
    indices = sorted(meta["part"]["index"] for _, meta, _ in loaded)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        twice = sorted({i for i in indices if indices.count(i) > 1})
        what = []
        if missing:
            what.append(f"missing node ranks {', '.join(map(str, missing))}")
        if twice:
            what.append(f"node ranks given twice: {', '.join(map(str, twice))}")
        raise StoreError(f"the parts are not node ranks 0..{count - 1}: {'; '.join(what)}")


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _unit_outputs(path: Path, meta: dict, report: dict) -> list[UnitOutput]:
    """The units of one part, their leftovers read back from the part's padded last blocks."""
    size = meta["block_size"]
    shards = {shard["name"]: shard for shard in meta["shards"]}
    tail_tokens, tail_ends = [], []
    for name in meta["split"]["tail_shards"]:
        shard = shards[name]
        tokens = np.fromfile(path / layout.tokens_file(name), dtype=np.dtype(meta["dtype"]))
        lengths = np.load(path / layout.lengths_file(name))
        # Only the last block of a part is padded, so the real tokens are the first ones.
        tail_tokens.append(tokens[: int(lengths.sum())].astype(np.uint32))
        tail_ends.append(np.load(path / layout.doc_ends_file(name)) - shard["first_block"] * size)
    tokens = np.concatenate(tail_tokens) if tail_tokens else np.empty(0, np.uint32)
    ends = np.concatenate(tail_ends) if tail_ends else np.empty(0, np.int64)
    unit_reports = {entry["index"]: entry for entry in report.get("unit_reports", [])}
    outputs, at = [], 0
    for entry in meta["units"]:
        count = entry["leftover_tokens"]
        mine = ends[(ends > at) & (ends <= at + count)] - at
        if len(mine) != entry["leftover_doc_ends"]:
            raise StoreError(
                f"{path}: unit {entry['index']} has {len(mine)} document ends in its leftover "
                f"(expected {entry['leftover_doc_ends']}); run `streampack verify {path}`"
            )
        unit_report = unit_reports.get(entry["index"])
        if unit_report is None:
            raise StoreError(f"{path}: report.json has no entry for unit {entry['index']}")
        unit = Unit(
            **{key: entry[key] for key in Unit.__dataclass_fields__ if key != "open_path"},
            open_path=os.path.abspath(entry["path"]),
        )
        outputs.append(
            UnitOutput(
                unit=unit,
                folder=path,
                shards=[shards[name] for name in entry["shards"]],
                ends_base=entry["first_block"] * size,
                leftover=tokens[at : at + count],
                leftover_ends=mine,
                documents=entry["documents"],
                tokens=entry["tokens"],
                padded_tokens=entry["padded_tokens"],
                truncated_tokens=entry["truncated_tokens"],
                lines=entry["lines"],
                bytes=unit_report.get("bytes", 0),
                seconds=unit_report["seconds"],
                attempts=unit_report["attempts"],
                report=unit_report["report"],
                backend=report.get("backend", ""),
                workers=report.get("workers", 0),
            )
        )
        at += count
    return outputs
