"""Hugging Face `datasets` views: a streaming `IterableDataset` over a streampack dataset, and a
map-style `Dataset` over a token store whose ids stay in the store's memory-mapped shards."""

import numpy as np

from ..pack import IGNORE_INDEX
from ..store import TokenStore


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "this needs Hugging Face datasets: pip install 'streampack[bench]' or datasets"
        ) from None
    return datasets


def _rows(dataset):
    for sample in dataset:
        yield {key: value.numpy() for key, value in sample.items()}


def iterable_from_torch(dataset):
    """A `datasets.IterableDataset` yielding the samples of a streampack iterable dataset (numpy
    arrays), with its rank and worker split and its epoch as they are set."""
    datasets = _datasets()
    return datasets.IterableDataset.from_generator(_rows, gen_kwargs={"dataset": dataset})


def dataset_from_store(store: TokenStore):
    """A map-style `datasets.Dataset` over the store's blocks, without copying the tokens.

    The Arrow column `input_ids` is a view of each shard's memory-mapped `.tokens` file (one
    chunk per shard), `length` holds the real tokens per block; a transform makes the int64
    `input_ids`, `labels` (-100 on padding) and `attention_mask` of each row as it is read.
    """
    import pyarrow as pa
    from datasets.table import InMemoryTable

    datasets = _datasets()
    chunks = []
    arrow_type = pa.from_numpy_dtype(store.dtype)
    for shard in range(len(store.shards)):
        tokens = store._tokens(shard)
        values = pa.Array.from_buffers(
            arrow_type, tokens.size, [None, pa.py_buffer(np.asarray(tokens).reshape(-1))]
        )
        chunks.append(pa.FixedSizeListArray.from_arrays(values, store.block_size))
    ids = pa.chunked_array(chunks, type=pa.list_(arrow_type, store.block_size))
    table = pa.table({"input_ids": ids, "length": pa.array(store.lengths, pa.int32())})
    dataset = datasets.Dataset(InMemoryTable(table))
    dataset.set_transform(_training_view(store.block_size))
    return dataset


def _training_view(block_size: int):
    def transform(rows: dict) -> dict:
        input_ids = np.asarray(rows["input_ids"], dtype=np.int64).reshape(-1, block_size)
        lengths = np.asarray(rows["length"], dtype=np.int64)
        mask = (np.arange(block_size)[None, :] < lengths[:, None]).astype(np.int64)
        labels = np.where(mask == 1, input_ids, IGNORE_INDEX)
        return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}

    return transform
