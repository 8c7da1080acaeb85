"""The token store: shards of packed blocks, an index of document ends, and its metadata."""

from .format import FORMAT_NAME, FORMAT_VERSION, choose_dtype
from .reader import TokenStore
from .verify import verify_store
from .writer import StoreWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "StoreWriter",
    "TokenStore",
    "choose_dtype",
    "verify_store",
]
