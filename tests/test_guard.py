"""The memory guard and the batch size: the budget held where an unguarded run goes over it, a
clean stop that the same command continues, and blocks that do not depend on the batch size."""

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_build import (
    SETTINGS,
    Stop,
    assert_same_store,
    mixed_corpus,
    stop_after_journal_writes,
)

import streampack
from streampack.engine import split_batch
from streampack.errors import MemoryBudgetError
from streampack.guard import MemoryGuard
from streampack.records import RecordBatch
from streampack.store import verify_store


def test_split_batch_keeps_every_document_and_byte():
    texts = [f"doc {i} " * (i % 7 + 1) for i in range(50)]
    batch = RecordBatch("a.txt", texts, np.arange(1, 51, dtype=np.int64), 4000)
    for size, documents in ((1024, None), (100, None), (1 << 20, 3), (1, 1)):
        pieces = split_batch(batch, size, documents)
        assert [text for piece in pieces for text in piece.texts] == texts
        assert np.concatenate([piece.lines for piece in pieces]).tolist() == list(range(1, 51))
        assert sum(piece.nbytes for piece in pieces) == 4000
        if documents:
            assert max(map(len, pieces)) <= documents
    assert len(split_batch(batch, 100, None)) > len(split_batch(batch, 1024, None)) > 1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return mixed_corpus(tmp_path_factory.mktemp("guard") / "corpus")


def test_blocks_do_not_depend_on_the_batch_size(corpus, qwen):
    runs = []
    for batch_size in ("auto", 1, 7, 100000):
        stream = streampack.stream(
            [corpus], qwen, block_size=32, batch_bytes=4096, batch_size=batch_size
        )
        runs.append(np.concatenate([batch["input_ids"] for batch in stream.batches()]))
        if batch_size == 1:
            assert stream.report["documents_per_batch"] == 1
    for found in runs[1:]:
        assert np.array_equal(runs[0], found)


def test_a_build_stopped_and_continued_with_other_batch_sizes_writes_the_same_store(
    tmp_path, corpus, qwen, monkeypatch
):
    """Read batches cut in tokenizer batches of 3, then 5 documents: the same shards."""
    settings = {**SETTINGS, "batch_bytes": 8192}
    store = tmp_path / "store"
    streampack.pack([corpus], store, tokenizer=qwen, **settings)
    reference = tmp_path / "reference"
    store.rename(reference)
    for stop in (2, 5, 9):
        with monkeypatch.context() as patch:
            stop_after_journal_writes(patch, stop)
            with pytest.raises(Stop):
                streampack.pack([corpus], store, tokenizer=qwen, batch_size=3, **settings)
        position = json.loads((store / "build.json").read_text())["position"]
        assert position is not None
        # The rest may use another batch size: it does not change the store.
        resumed = streampack.pack([corpus], store, tokenizer=qwen, batch_size=5, **settings)
        assert resumed["resumed"]["after_shards"] == stop - 1
        assert_same_store(reference, store)
        assert verify_store(store) == []
        shutil.rmtree(store)


def test_a_guard_under_its_own_footprint_stops_with_a_message(corpus, qwen):
    stream = streampack.stream([corpus], qwen, block_size=32, max_memory=1 << 20)
    with pytest.raises(MemoryBudgetError, match="--max-memory"):
        list(stream)


def test_the_default_budget_is_half_of_the_memory():
    import psutil

    guard = MemoryGuard()
    assert 0 < guard.budget <= psutil.virtual_memory().total // 2 + 1


# Run in a fresh process, so that nothing of another test's is in its memory. The peak is RSS
# sampled every millisecond during the pack alone (loading a tokenizer whose cache is cold peaks
# far higher, and the kernel's ru_maxrss would count that); the base is RSS before it.
_CHILD = """
import json, sys, threading
import psutil
import streampack
from streampack.guard import _release_heap
from streampack.tokenize import load_tokenizer
tokenizer = load_tokenizer(None)
_release_heap()
process = psutil.Process()
base = peak = process.memory_info().rss
done = threading.Event()
def sample():
    global peak
    while not done.wait(0.001):
        peak = max(peak, process.memory_info().rss)
sampler = threading.Thread(target=sample)
sampler.start()
report = streampack.pack(
    [sys.argv[1]], sys.argv[2], tokenizer=tokenizer, max_memory=int(float(sys.argv[3]) * 2**20),
    batch_bytes=16 << 20, batch_size=100000, token_stats=False,
)
done.set()
sampler.join()
events = report["backpressure_events"]
print(json.dumps({"base": base / 2**20, "peak": peak / 2**20, "events": events}))
"""


def _large_documents(folder: Path) -> Path:
    """40 documents of about 1.8 MB (CJK and Latin words), between short lines."""
    rng = random.Random(0)
    words = [
        "fever",
        "cough",
        "patient",
        "blood",
        "发热",
        "咳嗽",
        "治疗",
        "高血压",
        "患者",
        "医生。",
    ]
    folder.mkdir()
    with open(folder / "docs.txt", "w", encoding="utf-8") as out:
        for _ in range(40):
            for _ in range(30):
                out.write(" ".join(rng.choices(words, k=20)) + "\n")
            out.write(" ".join(rng.choices(words, k=250_000)) + "\n")
    return folder


def _run(corpus: Path, store: Path, budget_mb: float) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(corpus), str(store), str(budget_mb)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_guard_holds_a_budget_an_unguarded_run_exceeds(tmp_path):
    corpus = _large_documents(tmp_path / "large")
    free = _run(corpus, tmp_path / "free", 0)
    assert free["peak"] - free["base"] > 150, free
    # Well above what the tokenizer and one read batch need, well below the unguarded peak.
    budget = free["base"] + 0.7 * (free["peak"] - free["base"])
    guarded = _run(corpus, tmp_path / "guarded", budget)
    assert guarded["peak"] <= budget < free["peak"], (budget, free, guarded)
    for name in ("shard-00000.tokens", "metadata.json"):
        assert (tmp_path / "guarded" / name).is_file()
    free_ids = streampack.TokenStore(tmp_path / "free").block_tokens(-1)
    assert np.array_equal(free_ids, streampack.TokenStore(tmp_path / "guarded").block_tokens(-1))


def test_cli_stops_over_the_budget_and_the_same_command_continues(tmp_path, corpus):
    store = tmp_path / "store"
    command = [sys.executable, "-m", "streampack", "pack", str(corpus), "-o", str(store)]
    command += ["--block-size", "32", "--batch-mb", "0.002", "--shard-mb", "0.01", "-q"]
    done = subprocess.run([*command, "--max-memory", "1"], capture_output=True, text=True)
    assert done.returncode == 1
    assert "--max-memory" in done.stderr and "Traceback" not in done.stderr
    assert not (store / "metadata.json").exists()
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert verify_store(store) == []


def test_the_tuner_picks_the_fastest_size(monkeypatch):
    from streampack import guard

    rate = {256 << 10: 1.0e6, 512 << 10: 2.0e6, 1 << 20: 3.0e6, 2 << 20: 2.5e6, 4 << 20: 2.0e6}
    clock = [0.0]
    monkeypatch.setattr(guard.time, "perf_counter", lambda: clock[0])
    tuner = guard.BatchTuner(None, 4 << 20)
    for _ in range(200):
        size = tuner.size(4 << 20)
        for _ in range((4 << 20) // size):
            tokens = size // 4
            clock[0] += tokens / rate[size]
            tuner.observe(size, 10, tokens)
    assert tuner.chosen == 1 << 20
    assert tuner.report(None)["batch_size_chosen_mb"] == 1
    # Largest first; 512 KB, slower than 1 MB, ends the trials before 256 KB is tried.
    assert set(tuner.trials) == {4 << 20, 2 << 20, 1 << 20, 512 << 10}
