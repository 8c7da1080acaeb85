"""The memory guard and the batch size tuner: two controls the engine consults after every batch.

The guard samples this process's resident memory (RSS) against a budget. Near it (at
`SOFT_SHARE` of the budget) it applies back-pressure one step at a time: fewer batches in
flight between the stages, then tokenizer batches half as large (down to `MIN_BATCH_BYTES`),
each with a garbage collection and the freed heap handed back to the system. Over the budget
for `OVER_LIMIT_CHECKS` batches in a row at the smallest settings, it raises
`MemoryBudgetError`: `pack` then stops with its journal after the last committed shard, so the
same command continues the build.

The tuner picks the text per tokenizer batch (a slice of a read batch, never more than one)
from the tokens per second measured on the first batches of the run.
"""

import contextlib
import ctypes
import gc
import logging
import os
import threading
import time
from pathlib import Path

import psutil

from .errors import MemoryBudgetError

log = logging.getLogger(__name__)

# The default budget is this share of the memory the process may use (the machine's, or its
# cgroup's limit when lower): the rest is left to the training loop and the page cache.
DEFAULT_SHARE = 0.5
SOFT_SHARE = 0.8
OVER_LIMIT_CHECKS = 3
MIN_BATCH_BYTES = 64 << 10
# A tokenizer batch is alive in about this many copies at once (the queues, the encoder's window
# of 2 per worker, its str at up to 4 bytes a character, its ids): the text per batch is kept
# under the headroom left below the soft limit divided by this, from the first batch on.
HEADROOM_SHARE = 32
# Candidate tokenizer batch sizes of `--batch-size auto`, smallest first; each is tried on at
# least `TRIAL_BATCHES` batches and `TRIAL_BYTES` of text: about 22 MB of text for all five.
TUNE_CANDIDATES = (256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20)
TRIAL_BATCHES = 4
TRIAL_BYTES = 2 << 20
# A candidate this much slower than the best so far ends the trials: smaller ones are slower yet.
TUNE_STOP = 0.05


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v2, else v1); None when there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def default_budget() -> int:
    """`DEFAULT_SHARE` of the machine's memory or of the cgroup's limit, whichever is lower."""
    total = psutil.virtual_memory().total
    limit = _cgroup_limit()
    return int(DEFAULT_SHARE * (total if limit is None else min(total, limit)))


def _release_heap() -> None:
    """Collect garbage, and hand freed heap pages back to the system (glibc's malloc_trim):
    without it, RSS stays at its peak after the large strings of a huge document are freed."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class MemoryGuard:
    """Keeps RSS under `budget` bytes (None: `default_budget()`; 0: no guard, RSS still sampled).

    `in_flight` is the number of batches each queue between the stages may hold, and
    `batch_bytes` the cap on text per tokenizer batch (None: no cap); the engine reads both.
    """

    def __init__(self, budget: int | None = None, in_flight: int = 4) -> None:
        self.budget = default_budget() if budget is None else int(budget)
        self.enabled = self.budget > 0
        self._process = psutil.Process(os.getpid())
        self.in_flight = in_flight
        self.batch_bytes: int | None = None
        self.peak_rss = self._process.memory_info().rss
        self.events: list[dict] = []
        self._over = 0
        self._warned = False
        self._lock = threading.Lock()

    def check(self, batch_bytes: int) -> None:
        """After a batch of `batch_bytes` of text: sample RSS, step back-pressure or stop.
        Called from the reader thread and the consumer."""
        with self._lock:
            self._check(batch_bytes)

    def cap(self) -> int | None:
        """The most text a tokenizer batch may hold now; None: no cap."""
        if not self.enabled:
            return None
        rss = self._process.memory_info().rss
        headroom = max(MIN_BATCH_BYTES, int(SOFT_SHARE * self.budget - rss) // HEADROOM_SHARE)
        return headroom if self.batch_bytes is None else min(headroom, self.batch_bytes)

    def _check(self, batch_bytes: int) -> None:
        rss = self._process.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        if not self.enabled or rss < SOFT_SHARE * self.budget:
            self._over = 0
            return
        if self.in_flight > 1:
            self.in_flight = 1
            self._step("batches in flight cut to 1", rss)
            return
        cap = self.batch_bytes or batch_bytes
        if cap > MIN_BATCH_BYTES:
            self.batch_bytes = max(MIN_BATCH_BYTES, cap // 2)
            self._step(f"tokenizer batches cut to {self.batch_bytes / (1 << 20):.2f} MB", rss)
            return
        _release_heap()
        rss = self._process.memory_info().rss
        if rss <= self.budget:
            self._over = 0
            return
        self._over += 1
        if self._over >= OVER_LIMIT_CHECKS:
            raise MemoryBudgetError(
                f"resident memory {rss / 2**20:.0f} MB stayed over --max-memory "
                f"{self.budget / 2**20:.0f} MB with the smallest batches and one batch in "
                f"flight; raise --max-memory (max_memory in Python), or lower "
                f"--max-document-bytes so that huge documents are split, and run the same "
                f"command again: a pack build continues from its last committed shard"
            )

    def _step(self, action: str, rss: int) -> None:
        _release_heap()
        self.events.append(
            {"time": round(time.time(), 3), "rss_mb": round(rss / 2**20, 1), "action": action}
        )
        if not self._warned:
            self._warned = True
            log.warning(
                "resident memory %.0f MB is near --max-memory %.0f MB: applying back-pressure "
                "(%s; the report lists every step)",
                rss / 2**20,
                self.budget / 2**20,
                action,
            )
        else:
            log.debug("back-pressure at %.0f MB RSS: %s", rss / 2**20, action)

    def report(self) -> dict:
        return {
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "max_memory_mb": round(self.budget / 2**20, 1) if self.enabled else None,
            "backpressure_events": self.events,
        }


class BatchTuner:
    """Chooses the text per tokenizer batch: a fixed `batch_bytes`, or with `auto` the candidate
    of `TUNE_CANDIDATES` (up to `largest`) with the most tokens per second over its trial.
    Candidates are tried largest first; one `TUNE_STOP` slower than the best so far ends the
    trials.

    The reader asks `size()` for each read batch it cuts, and the tuner moves to the next
    candidate once it has cut `TRIAL_BATCHES` batches and `TRIAL_BYTES` of text at this one.
    Each batch carries the size it was cut at to the consumer, which times the gaps between
    hand-overs (the whole pipeline, as the run sees it) and `observe`s them against that size:
    about ten batches are in flight between the two, so the reader is that far ahead.
    """

    def __init__(self, batch_bytes: int | None, largest: int) -> None:
        self.auto = batch_bytes is None
        if self.auto:
            # Largest first: the read batch's own size is the usual best, and trying the small
            # sizes (slow, on most text) stops as soon as one is clearly slower.
            smaller = [size for size in TUNE_CANDIDATES if size < largest]
            self.candidates = [largest, *reversed(smaller)]
        else:
            self.candidates = [batch_bytes]
        self.chosen: int | None = None if self.auto else batch_bytes
        self._current = 0
        self._cut = [0, 0]
        self._measured: dict[int, list[tuple[int, float]]] = {}
        self._last: float | None = None
        self._last_size: int | None = None
        self.batches = 0
        self.documents = 0

    def size(self, batch_bytes: int) -> int:
        """The text per tokenizer batch to cut the next read batch (of `batch_bytes`) at."""
        if self.chosen is not None:
            return self.chosen
        size = self.candidates[self._current]
        self._cut[0] += max(1, -(-batch_bytes // size))
        self._cut[1] += batch_bytes
        if self._cut[0] >= TRIAL_BATCHES and self._cut[1] >= TRIAL_BYTES:
            self._current = min(self._current + 1, len(self.candidates) - 1)
            self._cut = [0, 0]
        return size

    def observe(self, size: int, documents: int, tokens: int) -> None:
        """A tokenizer batch cut at `size`, of `documents` and `tokens`, reached the consumer."""
        self.batches += 1
        self.documents += documents
        now = time.perf_counter()
        last, self._last = self._last, now
        changed, self._last_size = self._last_size != size, size
        if self.chosen is not None or last is None or changed:
            # The gap before a batch of a new size is still the old size's work.
            return
        self._measured.setdefault(size, []).append((tokens, now - last))
        done = [c for c in self.candidates if len(self._measured.get(c, ())) >= TRIAL_BATCHES - 1]
        if not done:
            return
        rates = self.trials
        best = max(rates[c] for c in done)
        slower = rates[done[-1]] < (1 - TUNE_STOP) * best
        if len(done) < len(self.candidates) and not slower:
            return
        self.chosen = max(done, key=rates.__getitem__)
        log.info(
            "batch size auto: %.2f MB of text per tokenizer batch (tokens/s by size: %s)",
            self.chosen / 2**20,
            ", ".join(f"{size / 2**20:g} MB {rate}" for size, rate in rates.items()),
        )

    @property
    def trials(self) -> dict[int, int]:
        """Tokens per second measured at each size tried."""
        return {
            size: round(sum(t for t, _ in runs) / max(sum(s for _, s in runs), 1e-9))
            for size, runs in self._measured.items()
        }

    def report(self, documents: int | None) -> dict:
        """`documents`: the fixed documents per batch, None for auto."""
        return {
            "batch_size": "auto" if documents is None else documents,
            # None when the run ended before the trials did.
            "batch_size_chosen_mb": (
                round(self.chosen / 2**20, 4) if self.auto and self.chosen is not None else None
            ),
            "documents_per_batch": round(self.documents / max(self.batches, 1), 1),
            "batch_size_tokens_per_second": {
                f"{size / 2**20:g} MB": rate for size, rate in self.trials.items()
            },
        }
