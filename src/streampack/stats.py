"""`streampack stats`: what a token store holds, from its metadata and its token counts.

`store_stats` computes one plain dict (what `--json` prints); the CLI prints it as a table. New
sections go in as new keys, so that older readers of the JSON keep working.

The question it answers first is whether a vocabulary suits a corpus: the most frequent tokens,
decoded, and how much of the corpus they cover, and the tokens per character of every source (a
domain whose terms split into many pieces has a high ratio next to general text).
"""

import logging
from pathlib import Path

import numpy as np

from .store.reader import read_metadata, store_tokenizer

log = logging.getLogger(__name__)


def store_stats(path, top: int = 50, tokenizer=None) -> dict:
    """Counts, the `top` most frequent tokens and tokens per character per source of the store
    at `path`. Tokens are decoded with `tokenizer` (a spec or a `LoadedTokenizer`), by default
    the one the metadata names, loaded offline; without it they are listed by id only."""
    path = Path(path)
    meta = read_metadata(path)
    size = int(meta["block_size"])
    stored = int(meta["blocks"]) * size - int(meta["padded_tokens"])
    stats = {
        "store": str(path),
        "tokenizer": meta["tokenizer"]["name"],
        "vocab_size": int(meta["tokenizer"]["vocab_size"]),
        "documents": meta["documents"],
        "tokens": meta["tokens"],
        "blocks": meta["blocks"],
        "block_size": size,
        "stored_tokens": stored,
        "padded_tokens": meta["padded_tokens"],
        "dropped_tokens": meta["dropped_tokens"],
        "truncated_tokens": meta["truncated_tokens"],
    }
    stats.update(_top_tokens(path, meta, top, stored, tokenizer))
    stats.update(_per_source(meta))
    return stats


def _top_tokens(path: Path, meta: dict, top: int, stored: int, tokenizer) -> dict:
    name = meta.get("token_counts")
    if not name:
        return {
            "token_counts": False,
            "note": "the store was packed with --no-token-stats: no token counts",
        }
    counts = np.load(path / name)
    # Most frequent first; equal counts by id.
    order = np.argsort(-counts.astype(np.int64), kind="stable")[:top]
    order = order[counts[order] > 0]
    loaded, why = store_tokenizer(meta, tokenizer)
    note = None if why is None else f"tokens not decoded: {why}; pass --tokenizer"
    special = set(loaded.added_tokens) if loaded is not None else set()
    rows = []
    cumulative = 0
    for rank, token_id in enumerate(order.tolist(), start=1):
        count = int(counts[token_id])
        cumulative += count
        row = {
            "rank": rank,
            "id": token_id,
            "count": count,
            "share": count / stored if stored else 0.0,
            "cumulative_share": cumulative / stored if stored else 0.0,
        }
        if loaded is not None:
            piece = loaded.hf.id_to_token(token_id)
            row.update(text=loaded.decode([token_id]), piece=piece, special=piece in special)
        rows.append(row)
    return {
        "token_counts": True,
        "distinct_tokens": int(np.count_nonzero(counts)),
        "top": rows,
        "top_share": cumulative / stored if stored else 0.0,
        "decoded": loaded is not None,
        "note": note,
    }


def _per_source(meta: dict) -> dict:
    sources = []
    characters = tokens = 0
    for entry in meta.get("files", ()):
        if "characters" not in entry:
            # Stores packed before streampack counted characters.
            continue
        ratio = entry["tokens"] / entry["characters"] if entry["characters"] else None
        sources.append({**entry, "tokens_per_character": ratio})
        characters += entry["characters"]
        tokens += entry["tokens"]
    return {
        "sources": sources,
        "characters": characters,
        "text_tokens": tokens,
        "tokens_per_character": tokens / characters if characters else None,
    }
