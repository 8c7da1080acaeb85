"""The on-disk layout, in one place, so that writer, reader and verifier agree.

STORE/metadata.json                 written last: a store without it is not complete
STORE/report.json                   the run's report
STORE/shard-00000.tokens            blocks, row after row: blocks * block_size ids, little endian
STORE/shard-00000.lengths.npy       int32 per block: real tokens (block_size but for padding)
STORE/shard-00000.doc_ends.npy      int64: end (exclusive) of each document ending in the shard,
                                    as a position in the whole store's token stream
STORE/token_counts.npy              uint64 per token id: how often it occurs in the stored blocks
                                    (padding left out); `token_counts.N.npy` after N appends, the
                                    name in metadata.json
STORE/build.json, build-state-*.npz only while a build is unfinished: see journal.py
"""

import numpy as np

FORMAT_NAME = "streampack-store"
FORMAT_VERSION = 1
METADATA = "metadata.json"
REPORT = "report.json"
TOKEN_COUNTS_PREFIX = "token_counts"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def tokens_file(shard: str) -> str:
    return f"{shard}.tokens"


def lengths_file(shard: str) -> str:
    return f"{shard}.lengths.npy"


def doc_ends_file(shard: str) -> str:
    return f"{shard}.doc_ends.npy"


def token_counts_file(appends: int) -> str:
    """A new name per append, so that the metadata names its counts in the same rename that
    makes it current."""
    return f"{TOKEN_COUNTS_PREFIX}.npy" if appends == 0 else f"{TOKEN_COUNTS_PREFIX}.{appends}.npy"


def choose_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves the store when every id fits (vocabularies up to 65,536), else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")
