"""The journal of a build in progress: what a killed `pack` needs to continue exactly.

STORE/build.json               rewritten (atomically) after every committed shard: the settings
                               and source files the build started with (its fingerprint), the
                               shards committed, and the pipeline's position after the last one
STORE/build-state-00003.npz    the arrays of that position (the packer's carried tokens, the token
                               counts), named by the shards committed, so that a new build.json
                               and its arrays appear together: the old pair stays until the new
                               build.json has replaced the old one

A build that finishes removes both; a folder with `metadata.json` is a complete store whatever
else is in it.
"""

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from ..errors import StoreError
from .atomic import fsync_folder, write_atomic

JOURNAL = "build.json"
JOURNAL_FORMAT = "streampack-build"
JOURNAL_VERSION = 1
STATE_PREFIX = "build-state-"
# Bytes hashed at each end of a source file: an edit that keeps size and mtime (a restored
# backup, a copy with `cp -p`) is still caught at the ends, where appends and truncations show.
EDGE_BYTES = 64 << 10


def state_file(shards: int) -> str:
    return f"{STATE_PREFIX}{shards:05d}.npz"


def file_identity(path: str) -> dict:
    """Size, modification time and a hash of the first and last `EDGE_BYTES` of `path`."""
    info = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(EDGE_BYTES))
        if info.st_size > EDGE_BYTES:
            handle.seek(max(EDGE_BYTES, info.st_size - EDGE_BYTES))
            digest.update(handle.read(EDGE_BYTES))
    return {
        "path": path,
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "edges_sha256": digest.hexdigest()[:32],
    }


def fingerprint(pipeline, *, dtype, shard_bytes: int, token_stats: bool, append: bool) -> dict:
    """Everything a build's output depends on: the settings as resolved (the backend that
    `auto` chose, the tokenizer's vocabulary hash) and every source file's identity. Two runs
    with equal fingerprints write the same bytes; the worker count is left out, since it does
    not change them."""
    from importlib.metadata import version

    tok = pipeline.tokenizer
    read = pipeline.read
    value = {
        "mode": "append" if append else "new",
        "streampack_version": version("streampack"),
        "tokenizer": tokenizer_facts(tok),
        "backend": pipeline.encoder.name,
        "dtype": np.dtype(dtype).name,
        "block_size": pipeline.pack.block_size,
        "packing": pipeline.pack.packing,
        "remainder": pipeline.pack.remainder,
        "position_ids": pipeline.pack.position_ids,
        "read": {
            name: getattr(read, name)
            for name in (
                "doc_mode",
                "text_field",
                "format",
                "batch_bytes",
                "on_error",
                "encoding",
                "encoding_errors",
                "max_document_bytes",
                "oversize",
            )
        },
        "shard_bytes": shard_bytes,
        "token_stats": token_stats,
        "sources": list(pipeline.sources),
        "files": [
            {**file_identity(file.path), "format": file.format, "codec": file.codec}
            for file in pipeline.files
        ],
    }
    # As it reads back from build.json: lists, not tuples.
    return json.loads(json.dumps(value))


def tokenizer_facts(tok) -> dict:
    """The tokenizer as metadata.json records it."""
    return {
        "name": tok.name,
        "vocab_hash": tok.vocab_hash,
        "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id,
        "pad_id": tok.pad_id,
        "prefix": list(tok.prefix),
        "suffix": list(tok.suffix),
    }


def append_conflicts(metadata: dict, now: dict) -> list[str]:
    """Why blocks made with the fingerprint `now` cannot join the store of `metadata`."""
    if not now:
        return []
    found = []
    old_tok, new_tok = metadata["tokenizer"], now["tokenizer"]
    for key in ("vocab_hash", "eos_id", "pad_id", "prefix", "suffix"):
        if old_tok.get(key) != new_tok.get(key):
            found.append(
                f"tokenizer {key} {_show(old_tok.get(key))} in the store, "
                f"{_show(new_tok.get(key))} now (tokenizer {new_tok['name']})"
            )
    for key in ("dtype", "block_size", "packing", "remainder", "position_ids"):
        if metadata.get(key) != now.get(key):
            found.append(f"{key} {_show(metadata.get(key))} in the store, {_show(now[key])} now")
    stored = {os.path.realpath(entry["path"]) for entry in metadata.get("files", ())}
    again = [e["path"] for e in now["files"] if os.path.realpath(e["path"]) in stored]
    if again:
        shown = ", ".join(again[:3]) + (f" and {len(again) - 3} more" if len(again) > 3 else "")
        found.append(f"already in the store: {shown}; --append adds new source files only")
    return found


def differences(before: dict, now: dict) -> list[str]:
    """What differs between two fingerprints, one phrase each, in the order of the keys."""
    found = []
    for key in sorted(set(before) | set(now), key=lambda k: (k == "files", k)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if key == "files":
            found += _file_differences(old or [], new or [])
        elif isinstance(old, dict) and isinstance(new, dict):
            found += [f"{key}.{what}" for what in differences(old, new)]
        else:
            found.append(f"{key} {_show(old)} before, {_show(new)} now")
    return found


def _file_differences(before: list[dict], now: list[dict]) -> list[str]:
    old = {entry["path"]: entry for entry in before}
    new = {entry["path"]: entry for entry in now}
    found = [f"source file {path} is new" for path in new if path not in old]
    found += [f"source file {path} is gone" for path in old if path not in new]
    for path in (path for path in new if path in old):
        changed = [
            f"{key} {_show(old[path].get(key))} before, {_show(new[path].get(key))} now"
            for key in ("size", "mtime_ns", "edges_sha256", "format", "codec")
            if old[path].get(key) != new[path].get(key)
        ]
        if changed:
            found.append(f"source file {path} changed ({'; '.join(changed)})")
    if not found and [e["path"] for e in before] != [e["path"] for e in now]:
        found.append("the source files are in another order")
    return found


def _show(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def save(folder: Path, journal: dict) -> None:
    """Write `journal` (numpy arrays anywhere inside it go to its state file) as the build's
    journal; the previous state file is removed once the new journal is in place."""
    arrays: dict[str, np.ndarray] = {}
    plain = _split(journal, arrays, "")
    name = state_file(len(journal["writer"]["shards"]))
    plain["state_file"] = name
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(folder / name, buffer.getvalue())
    write_atomic(folder / JOURNAL, (json.dumps(plain, ensure_ascii=False) + "\n").encode("utf-8"))
    fsync_folder(folder)
    for path in folder.glob(f"{STATE_PREFIX}*"):
        if path.name != name:
            path.unlink(missing_ok=True)


def load(folder: Path) -> dict | None:
    """The journal in `folder` with its arrays put back, or None when there is none."""
    path = folder / JOURNAL
    if not path.is_file():
        return None
    try:
        plain = json.loads(path.read_text(encoding="utf-8"))
        if plain.get("format") != JOURNAL_FORMAT or plain.get("version", 0) > JOURNAL_VERSION:
            raise ValueError(f"not a journal this streampack reads ({plain.get('format')!r})")
        with np.load(folder / plain["state_file"]) as state:
            arrays = {key: state[key] for key in state.files}
    except (OSError, ValueError, KeyError) as error:
        raise StoreError(
            f"{path}: the journal of an unfinished build cannot be read ({error}); "
            f"pass --overwrite to build the store again"
        ) from None
    return _join(plain, arrays)


def remove(folder: Path) -> None:
    """The journal, then its state files (a state file without a journal is only litter)."""
    (folder / JOURNAL).unlink(missing_ok=True)
    for path in folder.glob(f"{STATE_PREFIX}*"):
        path.unlink(missing_ok=True)


def _split(value, arrays: dict, key: str):
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"npz": key}
    if isinstance(value, dict):
        return {
            name: _split(item, arrays, f"{key}.{name}" if key else name)
            for name, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_split(item, arrays, f"{key}.{i}") for i, item in enumerate(value)]
    if isinstance(value, np.integer):
        return int(value)
    return value


def _join(value, arrays: dict):
    if isinstance(value, dict):
        if set(value) == {"npz"}:
            return arrays[value["npz"]]
        return {name: _join(item, arrays) for name, item in value.items()}
    if isinstance(value, list):
        return [_join(item, arrays) for item in value]
    return value
