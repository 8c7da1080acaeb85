"""Check the rank partition under `torchrun` (gloo, CPU): every rank iterates a streampack dataset
through a DataLoader, syncs once per batch as DDP would, and rank 0 checks that the union of
what the ranks saw is the whole data, with no overlap and the same number of batches each.

    torchrun --nproc_per_node 2 examples/check_ranks.py --data corpus/ --out result.json
"""

import argparse
import hashlib
import json
from collections import Counter
from datetime import timedelta

import torch
import torch.distributed as dist

import streampack
from streampack.torch import DataLoader, StoreIterableDataset, StreamDataset


def digests(loader) -> list[list[str]]:
    """The digest of every sample, batch by batch, with an all-reduce per batch (a rank with
    fewer batches would leave the others waiting, and the timeout would fail the run)."""
    batches = []
    for batch in loader:
        dist.all_reduce(torch.ones(1))
        rows = batch["input_ids"][batch["attention_mask"].sum(dim=1) > 0]
        batches.append([hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in rows])
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--store", help="also check a store packed here")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, size = dist.get_rank(), dist.get_world_size()

    stream = streampack.stream(args.data, block_size=args.block_size)
    expected = [hashlib.sha1(b["input_ids"].tobytes()).hexdigest() for b in stream]
    datasets = {"stream": StreamDataset(stream, even="drop", length=len(expected))}
    if args.store:
        datasets["store"] = StoreIterableDataset(args.store, seed=1, even="pad")
    result = {"world_size": size, "expected": len(expected)}
    for name, dataset in datasets.items():
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
        seen = digests(loader)
        everyone = [None] * size
        dist.all_gather_object(everyone, seen)
        if rank == 0:
            seen = Counter(d for batches in everyone for batch in batches for d in batch)
            # drop keeps whole rounds of world x batch blocks; pad keeps every block.
            kept = len(dataset) * size
            wanted = Counter(expected[: min(kept, len(expected))])
            result[name] = {
                "batches": [len(batches) for batches in everyone],
                "samples": sum(seen.values()),
                "kept": sum(wanted.values()),
                "extra": sum((seen - wanted).values()),
                "missing": sum((wanted - seen).values()),
            }
    if rank == 0:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
