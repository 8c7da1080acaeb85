"""The unit that flows from the readers to the tokenizer: documents of one file, in file order."""

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class RecordBatch:
    """Documents read from one source file.

    Attributes:
        path: the source file, as discovered.
        texts: the documents, each non-empty and not whitespace-only.
        lines: int64, the 1-based line (text, JSON lines, CSV) or row (parquet, JSON array element)
            where each document starts, for messages and the report.
        nbytes: raw bytes of the file consumed to produce this batch (before decompression where
            the codec allows it, else after), for throughput figures.
    """

    path: str
    texts: list[str]
    lines: np.ndarray
    nbytes: int

    def __len__(self) -> int:
        return len(self.texts)
