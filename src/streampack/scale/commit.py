"""Committing a split build: the units' shards in unit order, the leftovers joined, one index.

The store of a split build is

    full blocks of unit 0 | full blocks of unit 1 | ... | leftover blocks

where the leftover blocks are the tokens after each unit's last full block, joined in unit order
and cut into blocks, the last one dropped or padded as `remainder` says. Shard files are never
copied here: a fresh build's units wrote theirs into the store already, and a merge hard-links
the parts' files. Only each shard's document ends are rewritten, since they count from the start
of the whole store (8 bytes per document, against about 4 per token in the shards).
"""

import logging
import os
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import StoreError
from ..store import format as layout
from ..store.atomic import PARTIAL, save_npy_atomic, write_atomic
from .split import Unit, lines_before
from .unit import ATTEMPTS

log = logging.getLogger(__name__)

TAIL_SHARD = "shard-tail-000"


@dataclass
class UnitOutput:
    """A built unit as the commit needs it, from a worker's result or from a store part.

    Attributes:
        folder: where its shard files are now (the store itself, or a part to link from).
        shards: `{name, blocks, doc_ends, crc32}` per shard, in order.
        ends_base: the token position its document-end files count from (0 for a fresh unit).
        leftover, leftover_ends: its tokens after the last full block, and the ends of the
            documents among them (counted from the leftover's start).
        report: its counts, lines numbered from the unit's start (see `reports`).
    """

    unit: Unit
    folder: Path
    shards: list[dict]
    ends_base: int
    leftover: np.ndarray
    leftover_ends: np.ndarray
    documents: int
    tokens: int
    padded_tokens: int
    truncated_tokens: int
    lines: int
    bytes: int
    seconds: float
    attempts: int
    report: dict
    backend: str = ""
    workers: int = 0
    peak_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def blocks(self) -> int:
        return sum(shard["blocks"] for shard in self.shards)


class BuildFolder:
    """The store folder while units write into it: the rules of the store writer (never into a
    folder holding other files; an old store replaced only with `overwrite`, and kept whole until
    the new one is complete)."""

    def __init__(self, output, overwrite: bool = False) -> None:
        self.target = Path(output)
        self.path = self.target
        if self.target.exists() and not self.target.is_dir():
            raise StoreError(f"{self.target}: exists and is not a folder; choose another -o")
        self.created = not self.target.exists()
        if self.target.is_dir():
            entries = list(self.target.iterdir())
            ours = [e for e in entries if _is_store_file(e.name)]
            if len(ours) != len(entries):
                raise StoreError(
                    f"{self.target}: folder holds files that are not part of a store; "
                    f"streampack will not write into it; choose an empty or new folder"
                )
            if ours and not overwrite:
                raise StoreError(
                    f"{self.target}: a store (or an unfinished one) is already there; "
                    f"pass --overwrite (overwrite=True in Python) to replace it"
                )
            if ours:
                self.path = self.target.with_name(f"{self.target.name}.replacing")
                shutil.rmtree(self.path, ignore_errors=True)
                self.created = True
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"{self.path}: cannot create the store folder ({error.strerror or error})"
            ) from None

    def abort(self) -> None:
        """Remove what this build wrote; an old store that was to be replaced stays as it was."""
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for entry in self.path.iterdir():
            if entry.name == ATTEMPTS:
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith("shard-"):
                entry.unlink(missing_ok=True)

    def finish(self) -> None:
        """After the metadata is written: drop the attempt markers, put the store in place."""
        shutil.rmtree(self.path / ATTEMPTS, ignore_errors=True)
        if self.path != self.target:
            retired = self.target.with_name(f"{self.target.name}.retired")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(self.target, retired)
            os.replace(self.path, self.target)
            shutil.rmtree(retired, ignore_errors=True)
            self.path = self.target


def _is_store_file(name: str) -> bool:
    own = {layout.METADATA, layout.REPORT, layout.METADATA + PARTIAL, layout.REPORT + PARTIAL}
    return name.startswith("shard-") or name in own or name == ATTEMPTS


def count_attempts(folder: Path) -> dict[str, int]:
    """Attempts per unit name, from the markers each attempt leaves (`unit.pack_unit`)."""
    counts: dict[str, int] = {}
    marker_folder = folder / ATTEMPTS
    if marker_folder.is_dir():
        for entry in marker_folder.iterdir():
            if not entry.name.endswith(".d"):
                name = entry.name.split(".", 1)[0]
                counts[name] = counts.get(name, 0) + 1
    return counts


def line_offsets(outputs: list[UnitOutput]) -> list[int]:
    """Lines (or rows) of its file before each unit, from the units ahead where they are here,
    else counted from the file (a node's part holds every N-th unit only)."""
    offsets = []
    previous: UnitOutput | None = None
    for output in outputs:
        unit = output.unit
        if unit.kind == "rows":
            offset = unit.first_row
        elif unit.kind != "bytes" or unit.start == 0:
            offset = 0
        elif previous is not None and previous.unit.index == unit.index - 1:
            offset = offsets[-1] + previous.lines
        else:
            offset = lines_before(unit)
        offsets.append(offset)
        previous = output if unit.kind == "bytes" else None
    return offsets


def _link(source: Path, target: Path, copied: list) -> None:
    """A hard link; a copy across file systems (said once in the log)."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError as error:
        if not copied:
            log.info(
                "cannot hard-link %s into %s (%s): copying the shard files instead",
                source,
                target.parent,
                error.strerror or error,
            )
        copied.append(source)
        shutil.copyfile(source, target)


def place_shards(folder: Path, outputs: list[UnitOutput], block_size: int) -> tuple[list, int, int]:
    """The units' shards in `folder`, in unit order, with document ends counted from the start
    of the store; returns the shard entries of the metadata, the blocks they hold and how many
    files had to be copied rather than linked."""
    entries = []
    blocks = 0
    copied: list = []
    for output in outputs:
        shift = blocks * block_size - output.ends_base
        for shard in output.shards:
            name = shard["name"]
            if output.folder != folder:
                _link(
                    output.folder / layout.lengths_file(name),
                    folder / layout.lengths_file(name),
                    copied,
                )
                _link(
                    output.folder / layout.tokens_file(name),
                    folder / layout.tokens_file(name),
                    copied,
                )
            ends = np.load(output.folder / layout.doc_ends_file(name))
            if shift or output.folder != folder:
                save_npy_atomic(
                    folder / layout.doc_ends_file(name), (ends + shift).astype(np.int64)
                )
            entries.append(
                {
                    "name": name,
                    "first_block": blocks,
                    "blocks": shard["blocks"],
                    "doc_ends": shard["doc_ends"],
                    "crc32": shard["crc32"],
                }
            )
            blocks += shard["blocks"]
    return entries, blocks, len(copied)


def write_tail(
    folder: Path,
    outputs: list[UnitOutput],
    first_block: int,
    block_size: int,
    remainder: str,
    dtype: np.dtype,
    pad_id: int,
) -> tuple[list, dict]:
    """The leftover blocks: every unit's leftover in unit order, cut into blocks, the last one
    padded or dropped. Returns the shard entries (none or one) and the counts."""
    pieces = [output.leftover for output in outputs]
    stream = np.concatenate(pieces) if pieces else np.empty(0, np.uint32)
    ends, at = [], 0
    for output in outputs:
        ends.append(np.asarray(output.leftover_ends, dtype=np.int64) + at)
        at += len(output.leftover)
    ends = np.concatenate(ends) if ends else np.empty(0, np.int64)
    full, tail = divmod(len(stream), block_size)
    counts = {"padded_tokens": 0, "dropped_tokens": 0, "leftover_tokens": len(stream)}
    count = full
    if tail and remainder == "pad":
        count += 1
        counts["padded_tokens"] = block_size - tail
    elif tail:
        counts["dropped_tokens"] = tail
        ends = ends[ends <= full * block_size]
    if count == 0:
        return [], counts
    tokens = np.full(count * block_size, pad_id, dtype=dtype)
    kept = min(len(stream), count * block_size)
    tokens[:kept] = stream[:kept]
    lengths = np.full(count, block_size, dtype=np.int32)
    if kept < count * block_size:
        lengths[-1] = tail
    data = tokens.tobytes()
    save_npy_atomic(folder / layout.lengths_file(TAIL_SHARD), lengths)
    save_npy_atomic(folder / layout.doc_ends_file(TAIL_SHARD), ends + first_block * block_size)
    write_atomic(folder / layout.tokens_file(TAIL_SHARD), data)
    entry = {
        "name": TAIL_SHARD,
        "first_block": first_block,
        "blocks": count,
        "doc_ends": len(ends),
        "crc32": zlib.crc32(data),
    }
    return [entry], counts


def store_metadata(base: dict, dtype: np.dtype, block_size: int, shards: list) -> dict:
    """The metadata of a store, in the store writer's layout."""
    return {
        "format": layout.FORMAT_NAME,
        "version": layout.FORMAT_VERSION,
        **base,
        "dtype": np.dtype(dtype).name,
        "block_size": block_size,
        "blocks": sum(shard["blocks"] for shard in shards),
        "doc_ends": sum(shard["doc_ends"] for shard in shards),
        "shards": shards,
    }


def units_table(outputs: list[UnitOutput], block_size: int) -> list[dict]:
    """Where each unit went: the provenance of every block, and what a merge reads back."""
    table, first = [], 0
    for output in outputs:
        unit = output.unit.as_dict()
        del unit["open_path"]
        table.append(
            {
                **unit,
                "first_block": first,
                "blocks": output.blocks,
                "shards": [shard["name"] for shard in output.shards],
                "leftover_tokens": len(output.leftover),
                "leftover_doc_ends": len(output.leftover_ends),
                "documents": output.documents,
                "tokens": output.tokens,
                "padded_tokens": output.padded_tokens,
                "truncated_tokens": output.truncated_tokens,
                "lines": output.lines,
            }
        )
        first += output.blocks
    return table
