"""PyTorch and Trainer integration: datasets over streams and stores, rank and worker sharding,
exact mid-epoch resume. Imported on its own (`import streampack.torch`), since it needs torch.

    from streampack.torch import StreamDataset, StreampackCallback
    train = StreamDataset(streampack.stream("corpus/", block_size=1024), length=blocks)
    trainer = Trainer(model, args, train_dataset=train, callbacks=[StreampackCallback(train)])
"""

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - only without torch
    raise ImportError(
        "streampack.torch needs PyTorch; install it with: pip install 'streampack[torch]'"
    ) from error

from .datasets import (
    DataLoader,
    SFTCollator,
    SFTStoreDataset,
    SFTStreamDataset,
    StoreDataset,
    StoreIterableDataset,
    StreamDataset,
    estimate_blocks,
)
from .partition import world
from .trainer import StreampackCallback, load_data_state

__all__ = [
    "DataLoader",
    "SFTCollator",
    "SFTStoreDataset",
    "SFTStreamDataset",
    "StoreDataset",
    "StoreIterableDataset",
    "StreamDataset",
    "StreampackCallback",
    "estimate_blocks",
    "load_data_state",
    "world",
]
