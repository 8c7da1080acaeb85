"""`streampack inspect`: one block of a token store, or one sample of an SFT store, laid bare.

A block is shown as its documents: a document ends at its EOS (the only place the EOS id
occurs, since text never encodes to it), so the block's pieces are the end of a document begun
in an earlier block, whole documents, the start of one that goes on in the next block, and the
padding. A sample is shown as its runs of prompt (label -100) and trained tokens; a preference
pair as its prompt, chosen and rejected ids.

Text is decoded with the store's own tokenizer, loaded offline by the name its metadata
records and checked against the recorded vocabulary hash; where it cannot be, `--decode` is
an error that says why, and the ids can still be shown without it.
"""

import itertools
import json
from pathlib import Path

import numpy as np

from .errors import StoreError
from .pack import IGNORE_INDEX
from .store import TokenStore
from .store.format import METADATA
from .store.reader import store_tokenizer


def is_sft_store(path) -> bool:
    """Whether the metadata at `path` names the SFT store format (a missing or unreadable one
    does not; the token store's reader then says what is wrong with it)."""
    from .sft.store import FORMAT_NAME as SFT_FORMAT

    try:
        metadata = json.loads((Path(path) / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and metadata.get("format") == SFT_FORMAT


def open_store(path):
    """A `TokenStore` or an `SFTStore`, by the format its metadata names."""
    from .sft.store import SFTStore

    return SFTStore(path) if is_sft_store(path) else TokenStore(path)


def _run(kind: str, ids: np.ndarray, tokenizer) -> dict:
    piece = {"kind": kind, "tokens": len(ids), "ids": ids.tolist()}
    if tokenizer is not None:
        piece["text"] = tokenizer.decode(ids)
    return piece


def describe_block(store: TokenStore, index: int, tokenizer=None) -> dict:
    """Block `index` as its pieces: `document` (whole), `document_end` (begun in an earlier
    block), `document_start` (goes on in the next block), `document_middle` (both), and
    `padding`."""
    ids = np.asarray(store.block_tokens(index), dtype=np.int64)
    length = int(store.lengths[index])
    eos_id = int(store.metadata["tokenizer"]["eos_id"])
    ends = (np.flatnonzero(ids[:length] == eos_id) + 1).tolist()
    pieces = []
    start = 0
    # A document goes on from the block before when that block is full and does not end
    # with an EOS.
    begun_before = (
        index > 0
        and int(store.lengths[index - 1]) == store.block_size
        and int(store.block_tokens(index - 1)[-1]) != eos_id
    )
    for end in ends:
        kind = "document_end" if start == 0 and begun_before else "document"
        pieces.append(_run(kind, ids[start:end], tokenizer))
        start = end
    if start < length:
        kind = "document_middle" if start == 0 and begun_before else "document_start"
        pieces.append(_run(kind, ids[start:length], tokenizer))
    if length < len(ids):
        pieces.append({"kind": "padding", "tokens": len(ids) - length})
    return {
        "store": str(store.path),
        "block": index,
        "blocks": len(store),
        "block_size": store.block_size,
        "real_tokens": length,
        "document_ends": len(ends),
        "pieces": pieces,
    }


def describe_sample(store, index: int, tokenizer=None) -> dict:
    """Sample `index` of an SFT store as runs of `prompt` and `trained` tokens (a preference
    pair: its `prompt`, `chosen` and `rejected` ids)."""
    sample = store[index]
    base = {"store": str(store.path), "sample": index, "samples": len(store)}
    if store.preference:
        parts = [
            _run(part, sample[f"{part}_ids"], tokenizer)
            for part in ("prompt", "chosen", "rejected")
        ]
        return {**base, "pieces": parts}
    ids, labels = sample["input_ids"], sample["labels"]
    trained = labels != IGNORE_INDEX
    cuts = (np.flatnonzero(np.diff(trained.astype(np.int8))) + 1).tolist()
    bounds = [0, *cuts, len(ids)]
    pieces = [
        _run("trained" if trained[start] else "prompt", ids[start:end], tokenizer)
        for start, end in itertools.pairwise(bounds)
        if end > start
    ]
    return {
        **base,
        "tokens": len(ids),
        "trained_tokens": int(trained.sum()),
        "pieces": pieces,
    }


def describe(path, block: int | None = None, sample: int | None = None, decode: bool = False):
    """What `streampack inspect` shows, as a dict: ids per piece, and text with `decode`."""
    store = open_store(path)
    is_sft = not isinstance(store, TokenStore)
    if is_sft and block is not None:
        raise StoreError(f"{path} is an SFT store: choose a sample with --sample, not --block")
    if not is_sft and sample is not None:
        raise StoreError(f"{path} is a token store: choose a block with --block, not --sample")
    index = (sample if is_sft else block) or 0
    count = len(store)
    if not -count <= index < count:
        unit = "samples" if is_sft else "blocks"
        raise StoreError(f"{path}: no {'sample' if is_sft else 'block'} {index} ({count} {unit})")
    index %= count
    tokenizer = None
    if decode:
        tokenizer, why = store_tokenizer(store.metadata)
        if tokenizer is None:
            raise StoreError(f"{why}; leave out --decode to see the ids")
    if is_sft:
        return describe_sample(store, index, tokenizer)
    return describe_block(store, index, tokenizer)


LABELS = {
    "document": "document",
    "document_end": "end of a document begun in an earlier block",
    "document_start": "start of a document that goes on in the next block",
    "document_middle": "part of a document that runs through the whole block",
    "padding": "padding",
    "prompt": "prompt (labels -100)",
    "trained": "trained (labels = ids)",
    "chosen": "chosen",
    "rejected": "rejected",
}


def render(described: dict, color: bool = False, max_ids: int = 48) -> str:
    """The dict of `describe` as text: a heading, then one section per piece."""
    import click

    if "block" in described:
        lines = [
            f"block {described['block']} of {described['blocks']} in {described['store']}: "
            f"{described['real_tokens']} of {described['block_size']} tokens real, "
            f"{described['document_ends']} document ends"
        ]
    else:
        extra = ""
        if "tokens" in described:
            extra = f": {described['tokens']} tokens, {described['trained_tokens']} trained"
        lines = [
            f"sample {described['sample']} of {described['samples']} in {described['store']}{extra}"
        ]
    for piece in described["pieces"]:
        title = f"-- {LABELS[piece['kind']]}, {piece['tokens']} tokens "
        style = {"trained": "green", "chosen": "green", "rejected": "red", "padding": "blue"}
        title = title.ljust(72, "-")
        lines.append(click.style(title, fg=style.get(piece["kind"]), bold=True) if color else title)
        if "text" in piece:
            lines.append(piece["text"])
        elif "ids" in piece:
            ids = piece["ids"]
            shown = " ".join(map(str, ids[:max_ids]))
            lines.append(
                shown + (f" ... ({len(ids) - max_ids} more)" if len(ids) > max_ids else "")
            )
    return "\n".join(lines)
