"""`streampack stats`: what a token store holds, or what sources would give, as one dict.

`store_stats` reads a store (its metadata, token counts, block lengths and document ends);
`source_stats` streams sources through the same pipeline as `pack`, writing nothing. Both give
one plain dict (what `--json` prints, what `plots.py` draws); the CLI prints it as a table. New
sections go in as new keys, so that older readers of the JSON keep working.

Document lengths are in tokens, one EOS each included, from the document ends the packer
records; block fill is real tokens over the block size. Both come with percentiles and a
histogram (log-spaced bins for lengths), so a plot needs nothing but the dict.

The question it answers first is whether a vocabulary suits a corpus: the most frequent tokens,
decoded, and how much of the corpus they cover, and the tokens per character of every source (a
domain whose terms split into many pieces has a high ratio next to general text).
"""

import json
import logging
from pathlib import Path

import numpy as np

from .store import format as layout
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
    name = meta.get("token_counts")
    counts = np.load(path / name) if name else None
    stats.update(_top_tokens(counts, meta, top, stored, tokenizer))
    stats.update(_per_source(meta))
    ends = [np.load(path / layout.doc_ends_file(s["name"])) for s in meta["shards"]]
    lengths = [np.load(path / layout.lengths_file(s["name"])) for s in meta["shards"]]
    stats.update(_shape(_concat(ends), _concat(lengths), size))
    report_path = path / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    stats.update(_problems(report))
    stats["timeline"] = report.get("timeline", [])
    return stats


def source_stats(sources, top: int = 50, tokenizer=None, **settings) -> dict:
    """What `pack` would make of `sources`, streamed, nothing written: the keys of
    `store_stats`. `settings` are `streampack.stream`'s keywords (block size, doc mode, ...)."""
    from . import api

    pipeline = api.stream(sources, tokenizer, **settings).pipeline
    timeline = api.Timeline()
    pipeline.progress.listeners.append(timeline)
    loaded = pipeline.tokenizer
    counts = np.zeros(loaded.vocab_size, dtype=np.uint64)
    ends, fills = [], []
    for batch in pipeline.blocks():
        real = np.arange(batch.tokens.shape[1])[None, :] < batch.lengths[:, None]
        counts += np.bincount(batch.tokens[real], minlength=len(counts)).astype(np.uint64)
        ends.append(np.asarray(batch.doc_ends))
        fills.append(np.asarray(batch.lengths))
    report = pipeline.report.as_dict()
    if report["documents"] == 0:
        from .errors import DataError
        from .report import nothing_used

        raise DataError(nothing_used(pipeline.sources, report, "documents"))
    size = pipeline.pack.block_size
    meta = {
        "tokenizer": {"name": loaded.name, "vocab_hash": loaded.vocab_hash},
        "files": [
            {"path": path, "documents": c[0], "characters": c[1], "tokens": c[2]}
            for path, c in pipeline.text_counts.items()
        ],
    }
    stored = report["blocks"] * size - report["padded_tokens"]
    stats = {
        "inputs": pipeline.sources,
        "tokenizer": loaded.name,
        "vocab_size": loaded.vocab_size,
        **{key: report[key] for key in ("documents", "tokens", "blocks")},
        "block_size": size,
        "stored_tokens": stored,
        **{key: report[key] for key in ("padded_tokens", "dropped_tokens", "truncated_tokens")},
    }
    stats.update(_top_tokens(counts, meta, top, stored, loaded))
    stats.update(_per_source(meta))
    stats.update(_shape(_concat(ends), _concat(fills), size))
    stats.update(_problems(report))
    stats["timeline"] = timeline.points
    return stats


def sft_store_stats(path) -> dict:
    """Samples, tokens, the trained share and the sample lengths of an SFT store."""
    from .sft.store import SFTStore

    store = SFTStore(path)
    meta = store.metadata
    report_path = Path(path) / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    stats = {
        "store": str(path),
        "kind": meta["kind"],
        "tokenizer": meta["tokenizer"]["name"],
        "vocab_size": int(meta["tokenizer"]["vocab_size"]),
        "template": meta.get("template"),
        "records": meta.get("records"),
        "samples": len(store),
        "documents": len(store),
        "tokens": meta["tokens"],
        "trained_tokens": meta.get("trained_tokens"),
        "truncated_samples": meta.get("truncated_samples"),
        "sample_length": distribution(store.lengths, log_bins=True),
        "timeline": report.get("timeline", []),
    }
    stats.update(_problems(report))
    return stats


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def distribution(values: np.ndarray, log_bins: bool, bins: int = 40) -> dict:
    """Mean, percentiles and a histogram of `values` (log-spaced bins from 1 if `log_bins`)."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return {"count": 0}
    if log_bins:
        edges = np.unique(np.geomspace(1, max(values.max(), 2), bins + 1).round(2))
    else:
        edges = np.linspace(0.0, 1.0, bins + 1)
    histogram, edges = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return {
        "count": len(values),
        "mean": float(values.mean()),
        **{f"p{q}": float(np.percentile(values, q)) for q in (1, 10, 50, 90, 99)},
        "max": float(values.max()),
        "histogram": {"edges": edges.tolist(), "counts": histogram.tolist()},
    }


def _shape(doc_ends: np.ndarray, block_lengths: np.ndarray, block_size: int) -> dict:
    """Document lengths (from the document ends in the token stream) and block fill."""
    lengths = np.diff(doc_ends, prepend=0) if len(doc_ends) else doc_ends
    return {
        "document_length": distribution(lengths, log_bins=True),
        "block_fill": distribution(block_lengths / block_size, log_bins=False),
    }


def _problems(report: dict) -> dict:
    """The run's skipped and repaired records by reason, and the files it skipped."""
    return {
        "skipped": report.get("skipped", {}),
        "repaired": report.get("repaired", {}),
        "files_skipped": report.get("files_skipped", {}),
    }


def _top_tokens(counts, meta: dict, top: int, stored: int, tokenizer) -> dict:
    if counts is None:
        return {
            "token_counts": False,
            "note": "the store was packed with --no-token-stats: no token counts",
        }
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
