"""A small corpus whose files split into many units, and readers of a split store's layout."""

import gzip
import json

import numpy as np
import pytest

from streampack.store import TokenStore

WORDS = [
    *("fever", "cough", "headache", "blood", "pressure", "sugar", "patient", "fluids", "rest"),
    *("发热", "咳嗽", "头痛"),
]


def _line(i: int) -> str:
    # Lengths from a few bytes to several KB, so that cuts fall inside lines of every size.
    count = 1 + (i * 7919) % 40 + (600 if i % 97 == 0 else 0)
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(count))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Text with LF, CRLF and lone CR, blank lines, a bad byte and no final line break; JSON
    lines with bad records; parquet in many row groups; a gzip file (read whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("corpus")
    breaks = [b"\n", b"\r\n", b"\r"]
    text = bytearray()
    for i in range(900):
        text += b"" if i % 31 == 5 else _line(i).encode()
        if i == 400:
            text += b" bad \xff byte"
        text += breaks[(i // 50) % 3] if i < 899 else b""
    (folder / "notes.txt").write_bytes(bytes(text))
    records = []
    for i in range(700):
        if i % 89 == 3:
            records.append("{not json")
        elif i % 113 == 7:
            records.append(json.dumps({"text": 5}))
        else:
            records.append(json.dumps({"id": i, "text": _line(i + 5)}, ensure_ascii=False))
    (folder / "records.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    table = pa.table({"text": [_line(i + 9) if i % 50 else None for i in range(600)]})
    pq.write_table(table, folder / "table.parquet", row_group_size=60)
    with gzip.open(folder / "more.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(_line(i) + "\n" for i in range(200)))
    return folder


def real_tokens(store: TokenStore, first: int, count: int) -> np.ndarray:
    pieces = [store.block_tokens(i)[: store.lengths[i]] for i in range(first, first + count)]
    return np.concatenate(pieces) if pieces else np.empty(0, np.uint32)


def stream_of(path) -> np.ndarray:
    """Every real token of a store, block after block."""
    store = TokenStore(path)
    return real_tokens(store, 0, len(store))


def unit_order_stream(path) -> np.ndarray:
    """The tokens of a split store in source order: each unit's full blocks, then its leftover
    (taken from the leftover blocks at the end)."""
    store = TokenStore(path)
    meta = store.metadata
    first_tail = meta["split"]["tail_first_block"]
    tail = real_tokens(store, first_tail, len(store) - first_tail)
    out, at = [], 0
    for unit in meta["units"]:
        out.append(real_tokens(store, unit["first_block"], unit["blocks"]))
        out.append(tail[at : at + unit["leftover_tokens"]])
        at += unit["leftover_tokens"]
    return np.concatenate(out)


def store_files(path) -> dict[str, bytes]:
    """The bytes of every shard file, and the metadata without its creation time."""
    files = {
        entry.name: entry.read_bytes()
        for entry in sorted(path.iterdir())
        if entry.name.startswith("shard-")
    }
    meta = json.loads((path / "metadata.json").read_text())
    meta.pop("created")
    files["metadata.json"] = json.dumps(meta, sort_keys=True).encode()
    return files


@pytest.fixture(scope="session")
def layout():
    """The readers above, for the tests (test folders are not packages here)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        stream_of=stream_of, unit_order_stream=unit_order_stream, store_files=store_files
    )
