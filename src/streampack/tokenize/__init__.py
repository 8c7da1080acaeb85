"""Tokenizing: load a tokenizer offline and pick the backend that encodes it exactly and fastest."""

from .backends import Encoder, QuicktokEncoder, TokenizersEncoder, make_encoder, resolve_workers
from .loader import BUILTIN_NAME, LoadedTokenizer, cache_dir, load_tokenizer

__all__ = [
    "BUILTIN_NAME",
    "Encoder",
    "LoadedTokenizer",
    "QuicktokEncoder",
    "TokenizersEncoder",
    "cache_dir",
    "load_tokenizer",
    "make_encoder",
    "resolve_workers",
]
