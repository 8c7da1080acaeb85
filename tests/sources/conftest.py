"""Helpers for the reader tests: read files end to end and look at documents, lines and counts."""

from dataclasses import dataclass

import numpy as np
import pytest

from streampack.config import ReadConfig
from streampack.records import RecordBatch
from streampack.report import Report
from streampack.sources import discover, read_batches


@dataclass
class Read:
    batches: list[RecordBatch]
    report: Report

    @property
    def texts(self) -> list[str]:
        return [text for batch in self.batches for text in batch.texts]

    @property
    def lines(self) -> list[int]:
        return [int(line) for batch in self.batches for line in batch.lines]

    def skipped(self) -> dict[str, int]:
        return {reason: count for reason, count in self.report.skipped.items() if count}

    def where(self, reason: str) -> list[str]:
        return list(self.report.locations.get(reason, []))

    def repaired(self) -> dict[str, int]:
        return {reason: count for reason, count in self.report.repaired.items() if count}

    def repaired_at(self, reason: str) -> list[str]:
        return list(self.report.repaired_locations.get(reason, []))


@pytest.fixture
def read():
    """`read(*paths, **ReadConfig options)`: discover and read everything into a `Read`."""

    def run(*paths, **options) -> Read:
        report = Report()
        config = ReadConfig(**options)
        files = discover([str(path) for path in paths], report, format=config.format)
        batches = list(read_batches(files, config, report))
        for batch in batches:
            assert batch.lines.dtype == np.int64
            assert len(batch.lines) == len(batch.texts) > 0
        return Read(batches, report)

    return run
