"""streampack: stream, tokenize and pack LLM training data in bounded memory.

import streampack
for block in streampack.stream("corpus/", block_size=1024):
    ...                                   # dict of input_ids, labels, attention_mask
streampack.pack("corpus/", "store/")      # or write a memory-mapped token store
store = streampack.TokenStore("store/")   # len(store), store[i]
for batch in streampack.stream_sft("chat/"):  # padded SFT batches with label masks
    ...
"""

import logging

from .api import BlockStream, SFTStream, pack, stream, stream_sft
from .config import PackConfig, ReadConfig, TokenizeConfig
from .errors import (
    ConfigError,
    DataError,
    MemoryBudgetError,
    SourceError,
    StoreError,
    StreampackError,
    TokenizerError,
)
from .sft.store import SFTStore
from .store import TokenStore, verify_store
from .tokenize import load_tokenizer
from .validate import validate

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "BlockStream",
    "ConfigError",
    "DataError",
    "MemoryBudgetError",
    "PackConfig",
    "ReadConfig",
    "SFTStore",
    "SFTStream",
    "SourceError",
    "StoreError",
    "StreampackError",
    "TokenStore",
    "TokenizeConfig",
    "TokenizerError",
    "load_tokenizer",
    "pack",
    "stream",
    "stream_sft",
    "validate",
    "verify_store",
]
