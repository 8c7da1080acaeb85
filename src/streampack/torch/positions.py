"""Restart points of a stream, written by whichever process runs the pipeline.

DataLoader workers run the pipeline; the training loop's process saves checkpoints. A table in
shared memory, made before the workers start, carries the pipeline's recent positions (file,
document, output token) from the workers to the loop: a checkpoint then records one at or before
the resume point, and a resume re-reads at most from the start of that encoded batch (a few MB
of the current file), never the corpus.
"""

import numpy as np
import torch

from ..engine import StreamPosition

# Workers that record (more are fine; they just do not record) and positions kept per worker.
# A worker is at most a few encoded batches ahead of the loop, so 64 recent ones suffice.
SLOTS = 64
RECENT = 64
_CHECK = 0x5EED_5EED_5EED


def _check(file: int, record: int, token: int) -> int:
    # Catches a row read while its writer was half-way through it.
    return (file * 1_000_003 + record * 7_919 + token * 31 + _CHECK) % (1 << 62)


class PositionTable:
    """`record(worker, position)` in any process; `best(token)` in the loop's process."""

    def __init__(self) -> None:
        # Per slot: row 0 holds the count written; rows 1.. are (file, record, token, check).
        self.table = torch.zeros((SLOTS, RECENT + 1, 4), dtype=torch.int64).share_memory_()

    def clear(self) -> None:
        self.table.zero_()

    def record(self, worker: int, position: StreamPosition) -> None:
        if worker >= SLOTS:
            return
        rows = self.table[worker]
        count = int(rows[0, 0])
        row = rows[1 + count % RECENT]
        row[3] = -1
        row[0], row[1], row[2] = position.file, position.record, position.token
        row[3] = _check(position.file, position.record, position.token)
        rows[0, 0] = count + 1

    def best(self, token: int) -> StreamPosition | None:
        """The latest recorded position at or before output token `token`, or None."""
        rows = self.table[:, 1:, :].reshape(-1, 4).numpy().copy()
        valid = rows[:, 3] == [_check(int(f), int(r), int(t)) for f, r, t in rows[:, :3]]
        valid &= rows[:, 3] > 0
        valid &= rows[:, 2] <= token
        if not valid.any():
            return None
        found = rows[valid]
        f, r, t, _ = found[int(np.argmax(found[:, 2]))]
        return StreamPosition(int(f), int(r), int(t))
