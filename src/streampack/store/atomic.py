"""Writes that readers see whole or not at all, and that survive a power loss once made."""

import os
from pathlib import Path

import numpy as np

PARTIAL = ".partial"


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, flush to disk, then rename: readers see all or nothing."""
    partial = path.with_name(path.name + PARTIAL)
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    partial = path.with_name(path.name + PARTIAL)
    with open(partial, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def fsync_folder(folder: Path) -> None:
    """Make the renames done in `folder` durable: a rename lives in the folder's own entry,
    which a file's fsync does not flush."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
