"""Checking a store against its own metadata: sizes, checksums, index, counts, id range and the
token counts."""

import json
import zlib
from pathlib import Path

import numpy as np

from ..errors import StoreError
from . import format as layout
from .reader import read_metadata

# Hash and scan the tokens in pieces of this many bytes: bounded memory for any shard size.
CHUNK_BYTES = 16 << 20


def verify_store(path, checksums: bool = True) -> list[str]:
    """Every inconsistency found, as `file: what is wrong (expected, found)`; empty when sound."""
    path = Path(path)
    if _is_sft_store(path):
        from ..sft.store import verify_sft_store

        return verify_sft_store(path, checksums)
    try:
        meta = read_metadata(path)
    except StoreError as error:
        return [str(error)]
    problems: list[str] = []
    dtype = np.dtype(meta["dtype"])
    size = int(meta["block_size"])
    vocab = int(meta["tokenizer"]["vocab_size"])
    eos = int(meta["tokenizer"]["eos_id"])
    if np.iinfo(dtype).max < vocab - 1:
        problems.append(f"metadata: dtype {dtype.name} cannot hold vocabulary size {vocab}")

    blocks = ends_total = 0
    real_tokens = 0
    # With checksums, the token counts are recounted from the shards as they are hashed.
    recount = np.zeros(vocab, np.int64) if checksums and meta.get("token_counts") else None
    for shard in meta["shards"]:
        name = shard["name"]
        if shard["first_block"] != blocks:
            problems.append(
                f"{name}: first block {shard['first_block']} (expected {blocks}, after the "
                f"previous shards)"
            )
        tokens_path = path / layout.tokens_file(name)
        expected = shard["blocks"] * size * dtype.itemsize
        if not tokens_path.is_file():
            problems.append(f"{tokens_path}: missing")
            blocks += shard["blocks"]
            continue
        found = tokens_path.stat().st_size
        if found != expected:
            problems.append(f"{tokens_path}: {found} bytes (expected {expected})")
            blocks += shard["blocks"]
            continue
        problems += _check_tokens(tokens_path, shard, dtype, vocab, checksums, recount)
        lengths, ends = _load_index(path, name, problems)
        if lengths is not None:
            if len(lengths) != shard["blocks"]:
                problems.append(
                    f"{name}: {len(lengths)} block lengths (expected {shard['blocks']})"
                )
            elif len(lengths) and (lengths.min() < 1 or lengths.max() > size):
                problems.append(f"{name}: block lengths outside 1..{size}")
            real_tokens += int(lengths.sum())
            if recount is not None:
                # Padding holds the pad id and is not counted.
                recount[int(meta["tokenizer"]["pad_id"])] -= shard["blocks"] * size - int(
                    lengths.sum()
                )
        if ends is not None:
            ends_total += len(ends)
            problems += _check_ends(path, name, ends, blocks, shard, size, dtype, eos, meta)
        blocks += shard["blocks"]

    if blocks != meta["blocks"]:
        problems.append(f"metadata: blocks {meta['blocks']} (the shards hold {blocks})")
    if ends_total != meta["doc_ends"]:
        problems.append(f"metadata: doc_ends {meta['doc_ends']} (the index holds {ends_total})")
    stored = meta["blocks"] * size - meta["padded_tokens"]
    if real_tokens != stored:
        problems.append(
            f"metadata: {stored} real tokens stored (blocks * block_size - padded_tokens), "
            f"the block lengths add up to {real_tokens}"
        )
    if meta.get("token_counts"):
        problems += _check_counts(path / meta["token_counts"], vocab, stored, recount)
    accounted = stored + meta["dropped_tokens"] + meta["truncated_tokens"]
    if meta["tokens"] != accounted:
        problems.append(
            f"metadata: tokens {meta['tokens']} != blocks * block_size - padded + dropped + "
            f"truncated = {accounted}"
        )
    return problems


def _is_sft_store(path: Path) -> bool:
    try:
        meta = json.loads((path / layout.METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == "streampack-sft-store"


def _check_counts(counts_path: Path, vocab: int, stored: int, recount) -> list[str]:
    """The saved token counts: one per id, adding up to the stored tokens, equal to a recount."""
    try:
        counts = np.load(counts_path)
    except (OSError, ValueError) as error:
        return [f"{counts_path}: token counts cannot be read ({error})"]
    if counts.shape != (vocab,) or counts.dtype != np.uint64:
        return [
            f"{counts_path}: {counts.dtype} counts of shape {counts.shape} "
            f"(expected uint64 of shape ({vocab},), one per token id)"
        ]
    problems = []
    total = int(counts.sum(dtype=np.uint64))
    if total != stored:
        problems.append(
            f"{counts_path}: the token counts add up to {total} (expected the {stored} real "
            f"tokens stored)"
        )
    if recount is not None and not np.array_equal(counts.astype(np.int64), recount):
        wrong = np.flatnonzero(counts.astype(np.int64) != recount)
        problems.append(
            f"{counts_path}: counts of {len(wrong)} token ids differ from the shards "
            f"(first: id {int(wrong[0])}, {int(counts[wrong[0]])} saved, "
            f"{int(recount[wrong[0]])} in the shards)"
        )
    return problems


def _check_tokens(tokens_path, shard, dtype, vocab, checksums, recount=None) -> list[str]:
    crc32 = 0
    top = 0
    with open(tokens_path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES - CHUNK_BYTES % dtype.itemsize):
            if checksums:
                crc32 = zlib.crc32(chunk, crc32)
            ids = np.frombuffer(chunk, dtype=dtype)
            if ids.size:
                top = max(top, int(ids.max()))
                if recount is not None:
                    # Ids outside the vocabulary are reported below, not counted.
                    recount += np.bincount(ids, minlength=vocab)[:vocab]
    problems = []
    if top >= vocab:
        problems.append(f"{tokens_path}: token id {top} outside the vocabulary (size {vocab})")
    if checksums and crc32 != shard["crc32"]:
        problems.append(
            f"{tokens_path}: crc32 checksum {crc32} (expected {shard['crc32']}): "
            f"the file changed after it was written"
        )
    return problems


def _load_index(path, name, problems):
    try:
        lengths = np.load(path / layout.lengths_file(name))
        ends = np.load(path / layout.doc_ends_file(name))
    except (OSError, ValueError) as error:
        problems.append(f"{name}: index cannot be read ({error})")
        return None, None
    return lengths, ends


def _check_ends(path, name, ends, first_block, shard, size, dtype, eos, meta) -> list[str]:
    problems = []
    if len(ends) != shard["doc_ends"]:
        problems.append(f"{name}: {len(ends)} document ends (expected {shard['doc_ends']})")
    if not len(ends):
        return problems
    low, high = first_block * size, (first_block + shard["blocks"]) * size
    if np.any(np.diff(ends) <= 0):
        problems.append(f"{name}: document ends are not strictly increasing")
    if ends[0] <= low or ends[-1] > high:
        problems.append(f"{name}: document ends outside the shard's tokens {low + 1}..{high}")
        return problems
    if meta.get("packing", True):
        # Every stored document ends with exactly the EOS streampack appended.
        tokens = np.memmap(path / layout.tokens_file(name), dtype=dtype, mode="r")
        last = tokens[ends - 1 - low]
        wrong = int(np.count_nonzero(last != eos))
        if wrong:
            problems.append(f"{name}: {wrong} document ends without EOS {eos}")
    return problems
