"""Resumable builds and appends: a build stopped at any commit and run again writes the same
store byte for byte; other arguments or changed sources are refused; appends leave the shards
already there untouched."""

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import streampack
from streampack.errors import StoreError
from streampack.report import RUN_KEYS
from streampack.store import TokenStore, verify_store
from streampack.store import writer as store_writer

WORDS = [
    *("fever", "cough", "headache", "patient", "blood", "pressure", "insulin", "dose", "daily"),
    *("发热", "咳嗽", "头痛", "高血压", "糖尿病", "胰岛素", "治疗", "症状", "患者", "医生"),
]


def _line(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))


def mixed_corpus(folder: Path, seed: int = 0) -> Path:
    """Text, gzip JSON lines with bad records, invalid bytes, blank lines and an oversize
    document: every kind of count the report keeps, spread over many batches."""
    rng = random.Random(seed)
    folder.mkdir()
    (folder / "a.txt").write_text("".join(_line(rng) + "\n" for _ in range(700)))
    records = []
    for i in range(500):
        if i % 37 == 5:
            records.append(b'{"text": "broken\n')
        elif i % 53 == 7:
            records.append(b'{"id": 1}\n')
        else:
            records.append(json.dumps({"text": _line(rng)}, ensure_ascii=False).encode() + b"\n")
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(b"".join(records), mtime=0))
    body = b"".join(
        (_line(rng).encode() + (b"\xff\xfe" if i % 41 == 3 else b"") + b"\n" + b"\n" * (i % 3))
        for i in range(400)
    )
    (folder / "c.txt").write_bytes(body)
    long = "\n".join(_line(rng) for _ in range(300))
    (folder / "d.jsonl").write_text(json.dumps({"text": long}, ensure_ascii=False) + "\n")
    return folder


SETTINGS = dict(block_size=32, batch_bytes=2048, shard_bytes=6000, max_document_bytes=4000)


def assert_same_store(reference: Path, store: Path) -> None:
    """Every file equal byte for byte, but for the start time in metadata.json and the keys of
    report.json in RUN_KEYS, which belong to the run."""
    names = sorted(os.listdir(reference))
    assert sorted(os.listdir(store)) == names
    for name in names:
        expected, found = (reference / name).read_bytes(), (store / name).read_bytes()
        if name in ("metadata.json", "report.json"):
            expected, found = json.loads(expected), json.loads(found)
            skip = {"created"} if name == "metadata.json" else RUN_KEYS
            for key in skip:
                expected.pop(key, None)
                found.pop(key, None)
        assert expected == found, name


class Stop(BaseException):
    """Stands for a kill: nothing after the journal write it follows runs."""


def stop_after_journal_writes(monkeypatch, count: int) -> None:
    original = store_writer.StoreWriter._write_journal
    seen = [0]

    def write_then_stop(self, position):
        original(self, position)
        seen[0] += 1
        if seen[0] == count:
            raise Stop

    monkeypatch.setattr(store_writer.StoreWriter, "_write_journal", write_then_stop)


def count_journal_writes(monkeypatch) -> list[int]:
    original = store_writer.StoreWriter._write_journal
    seen = [0]

    def counting(self, position):
        original(self, position)
        seen[0] += 1

    monkeypatch.setattr(store_writer.StoreWriter, "_write_journal", counting)
    return seen


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch):
    """Durability on power loss is not what these tests look at, and each fsync waits for the
    disk: without them the in-process builds here take a third of the time. The kill test's
    subprocesses keep them."""
    monkeypatch.setattr(os, "fsync", lambda descriptor: None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return mixed_corpus(tmp_path_factory.mktemp("build") / "corpus")


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"remainder": "pad", "position_ids": "reset"},
        {"packing": False},
    ],
    ids=["packed", "padded-tail", "no-packing"],
)
def test_a_stopped_build_continues_to_the_same_store(tmp_path, corpus, qwen, monkeypatch, options):
    settings = {**SETTINGS, **options}
    store = tmp_path / "store"
    with monkeypatch.context() as patch:
        writes = count_journal_writes(patch)
        report = streampack.pack([corpus], store, tokenizer=qwen, **settings)
    assert report["skipped"] and report["repaired"]
    assert len(json.loads((store / "metadata.json").read_text())["shards"]) > 10
    reference = tmp_path / "reference"
    store.rename(reference)
    total = writes[0]
    # The first journal (nothing committed), the second, the middle, the last ones.
    for stop in sorted({1, 2, total // 2, total - 1, total}):
        with monkeypatch.context() as patch:
            stop_after_journal_writes(patch, stop)
            with pytest.raises(Stop):
                streampack.pack([corpus], store, tokenizer=qwen, **settings)
        assert not (store / "metadata.json").exists()
        assert (store / "build.json").is_file()
        resumed = streampack.pack([corpus], store, tokenizer=qwen, **settings)
        assert resumed["resumed"]["after_shards"] == max(0, stop - 1), stop
        assert_same_store(reference, store)
        assert verify_store(store) == []
        shutil.rmtree(store)


def test_stopped_twice_and_interrupted_by_the_user(tmp_path, corpus, qwen, monkeypatch):
    store = tmp_path / "store"
    streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)
    reference = tmp_path / "reference"
    store.rename(reference)
    for stop in (4, 3):
        with monkeypatch.context() as patch:
            stop_after_journal_writes(patch, stop)
            with pytest.raises(Stop):
                streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)

    # Ctrl-C in the middle of a shard: the journal stays, the open shard goes.
    def interrupt(self, batch):
        if len(self.shards) >= 9:
            raise KeyboardInterrupt
        write(self, batch)

    write = store_writer.StoreWriter.write
    with monkeypatch.context() as patch:
        patch.setattr(store_writer.StoreWriter, "write", interrupt)
        with pytest.raises(KeyboardInterrupt):
            streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)
    assert not list(store.glob("*.partial"))
    streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)
    assert_same_store(reference, store)


def test_a_stopped_overwrite_continues_beside_the_old_store(tmp_path, corpus, qwen, monkeypatch):
    store = tmp_path / "store"
    streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)
    store.rename(tmp_path / "reference")
    old = _write_lines(tmp_path / "old.txt", 3, 50)
    streampack.pack([old], store, tokenizer=qwen, block_size=16)
    with monkeypatch.context() as patch:
        stop_after_journal_writes(patch, 4)
        with pytest.raises(Stop):
            streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS, overwrite=True)
    # The old store is whole meanwhile; the new one grows beside it.
    assert TokenStore(store).block_size == 16 and verify_store(store) == []
    assert (tmp_path / "store.replacing" / "build.json").is_file()
    report = streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS, overwrite=True)
    assert report["resumed"]["after_shards"] == 3
    assert_same_store(tmp_path / "reference", store)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt", "reference", "store"]


def test_other_arguments_or_changed_sources_are_refused(tmp_path, qwen, monkeypatch):
    corpus = mixed_corpus(tmp_path / "corpus")
    store = tmp_path / "store"
    with monkeypatch.context() as patch:
        stop_after_journal_writes(patch, 3)
        with pytest.raises(Stop):
            streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)
    with pytest.raises(StoreError) as refused:
        streampack.pack([corpus], store, tokenizer=qwen, **{**SETTINGS, "block_size": 64})
    message = str(refused.value)
    assert "an unfinished build with other arguments" in message
    assert "block_size 32 before, 64 now" in message
    assert "--overwrite" in message

    with (corpus / "a.txt").open("a") as handle:
        handle.write("one more line\n")
    with pytest.raises(
        StoreError, match=r"source file .*a\.txt changed \(size \d+ before, \d+ now"
    ):
        streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)
    (corpus / "e.txt").write_text("a new file\n")
    with pytest.raises(StoreError, match=r"source file .*e\.txt is new"):
        streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)

    # --overwrite starts the new build beside the unfinished one and swaps it in when whole.
    report = streampack.pack(
        [corpus], store, tokenizer=qwen, **{**SETTINGS, "block_size": 64}, overwrite=True
    )
    assert "resumed" not in report
    assert TokenStore(store).block_size == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "store"]
    assert verify_store(store) == []


def test_a_build_stopped_before_any_shard_starts_afresh_with_other_arguments(tmp_path, qwen):
    source = tmp_path / "a.jsonl"
    source.write_text('{"text": "fever"}\n{"content": "no text field"}\n')
    with pytest.raises(streampack.StreampackError, match="no text field"):
        streampack.pack([source], tmp_path / "store", tokenizer=qwen, on_error="raise")
    assert list((tmp_path / "store").iterdir()) == []
    report = streampack.pack([source], tmp_path / "store", tokenizer=qwen, text_field="text")
    assert report["documents"] == 1


def test_a_build_killed_before_its_first_shard_takes_other_arguments(
    tmp_path, corpus, qwen, monkeypatch
):
    store = tmp_path / "store"
    with monkeypatch.context() as patch:
        stop_after_journal_writes(patch, 1)
        with pytest.raises(Stop):
            streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)
    assert (store / "build.json").is_file()
    report = streampack.pack([corpus], store, tokenizer=qwen, **{**SETTINGS, "block_size": 48})
    assert "resumed" not in report
    assert TokenStore(store).block_size == 48


def test_a_finished_build_killed_while_clearing_its_journal(tmp_path, corpus, qwen, monkeypatch):
    store = tmp_path / "store"
    with monkeypatch.context() as patch:
        patch.setattr(store_writer.journal, "remove", lambda folder: None)
        first = streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)
    assert (store / "build.json").is_file()
    again = streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)
    assert again == first
    assert not (store / "build.json").exists()
    with pytest.raises(StoreError, match="a store is already there"):
        streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS)


# -- appends -------------------------------------------------------------------------------------


def _write_lines(path: Path, seed: int, count: int) -> Path:
    rng = random.Random(seed)
    path.write_text("".join(_line(rng) + "\n" for _ in range(count)))
    return path


def test_append_adds_blocks_and_leaves_the_shards_there(tmp_path, qwen):
    first = _write_lines(tmp_path / "first.txt", 1, 400)
    second = _write_lines(tmp_path / "second.txt", 2, 300)
    settings = dict(block_size=32, batch_bytes=2048, shard_bytes=8000)
    store = tmp_path / "store"
    one = streampack.pack([first], store, tokenizer=qwen, **settings)
    before = {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in store.glob("shard-*")
    }
    old_meta = json.loads((store / "metadata.json").read_text())
    first_counts = np.load(store / "token_counts.npy")
    two = streampack.pack([second], store, tokenizer=qwen, **settings, append=True)
    for name, (data, mtime) in before.items():
        assert (store / name).read_bytes() == data
        assert (store / name).stat().st_mtime_ns == mtime
    assert verify_store(store) == []

    # The appended blocks are those of `second` packed alone: it starts a new block, and the
    # tail `first` dropped stays dropped.
    alone = tmp_path / "alone"
    streampack.pack([second], alone, tokenizer=qwen, **settings)
    whole, part = TokenStore(store), TokenStore(alone)
    assert len(whole) == one["blocks"] + two["blocks"] == one["blocks"] + len(part)
    for index in (0, 1, len(part) // 2, len(part) - 1):
        for key, value in part[index].items():
            assert np.array_equal(whole[one["blocks"] + index][key], value), (index, key)

    meta = json.loads((store / "metadata.json").read_text())
    assert meta["documents"] == one["documents"] + two["documents"]
    assert meta["dropped_tokens"] == one["dropped_tokens"] + two["dropped_tokens"]
    assert meta["sources"] == [str(first), str(second)]
    assert [entry["path"] for entry in meta["files"]] == [str(first), str(second)]
    assert meta["created"] == old_meta["created"]
    assert meta["shards"][: len(old_meta["shards"])] == old_meta["shards"]
    (appended,) = meta["appends"]
    assert appended["first_block"] == one["blocks"] and appended["blocks"] == two["blocks"]
    assert meta["token_counts"] == "token_counts.1.npy"
    assert not (store / "token_counts.npy").exists()
    counts = np.load(store / meta["token_counts"])
    assert np.array_equal(counts, first_counts + np.load(alone / "token_counts.npy"))
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith("shard-")) == [
        "metadata.json",
        "report.json",
        "token_counts.1.npy",
    ]


def test_append_refusals(tmp_path, qwen):
    first = _write_lines(tmp_path / "first.txt", 1, 100)
    second = _write_lines(tmp_path / "second.txt", 2, 100)
    store = tmp_path / "store"
    with pytest.raises(StoreError, match="no complete store to append to"):
        streampack.pack([first], store, tokenizer=qwen, append=True)
    streampack.pack([first], store, tokenizer=qwen, block_size=32)
    with pytest.raises(StoreError, match="block_size 32 in the store, 64 now"):
        streampack.pack([second], store, tokenizer=qwen, block_size=64, append=True)
    with pytest.raises(StoreError, match=r"already in the store: .*first\.txt"):
        streampack.pack([first, second], store, tokenizer=qwen, block_size=32, append=True)
    with pytest.raises(StoreError, match="append without --no-token-stats"):
        streampack.pack(
            [second], store, tokenizer=qwen, block_size=32, append=True, token_stats=False
        )
    with pytest.raises(StoreError, match="pick one"):
        streampack.pack([second], store, tokenizer=qwen, append=True, overwrite=True)
    assert verify_store(store) == []
    assert "appends" not in json.loads((store / "metadata.json").read_text())


def test_a_stopped_append_continues_to_the_same_store(tmp_path, corpus, qwen, monkeypatch):
    first = _write_lines(tmp_path / "first.txt", 1, 300)
    store = tmp_path / "store"
    streampack.pack([first], store, tokenizer=qwen, **SETTINGS)
    shutil.copytree(store, tmp_path / "base")
    streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS, append=True)
    reference = tmp_path / "reference"
    store.rename(reference)
    for stop in (1, 5):
        shutil.copytree(tmp_path / "base", store)
        with monkeypatch.context() as patch:
            stop_after_journal_writes(patch, stop)
            with pytest.raises(Stop):
                streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS, append=True)
        # Meanwhile the store is the one before the append, whole.
        assert verify_store(store) == []
        assert len(TokenStore(store)) == len(TokenStore(tmp_path / "base"))
        streampack.pack([corpus], store, tokenizer=qwen, **SETTINGS, append=True)
        meta = json.loads((store / "metadata.json").read_text())
        expected = json.loads((reference / "metadata.json").read_text())
        # Each append records when it started.
        meta["appends"][0].pop("created")
        expected["appends"][0].pop("created", None)
        (store / "metadata.json").write_text(json.dumps(meta))
        (reference / "metadata.json").write_text(json.dumps(expected))
        assert_same_store(reference, store)
        shutil.rmtree(store)


# -- a real kill -------------------------------------------------------------------------------

ENTRY_POINT = Path(sys.executable).with_name("streampack")
STREAMPACK = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "streampack"]


def _committed(store: Path) -> int:
    try:
        return json.loads((store / "build.json").read_text())["committed"]
    except (OSError, ValueError, KeyError):
        return -1


def _run_until_killed(command: list[str], store: Path, after: int, delay: float) -> bool:
    """Run `command`; SIGKILL it `delay` s after its journal shows `after` committed shards.
    True when it was killed, False when it finished first."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while process.poll() is None and _committed(store) < after:
            time.sleep(0.002)
        time.sleep(delay)
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read().decode()
            return False
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True
    finally:
        process.stderr.close()


def test_builds_killed_at_random_points_end_identical(tmp_path, qwen):
    corpus = mixed_corpus(tmp_path / "corpus", seed=7)
    settings = dict(SETTINGS, shard_bytes=16000, batch_bytes=4096)
    store = tmp_path / "store"
    streampack.pack([str(corpus)], store, tokenizer=qwen, **settings)
    reference = tmp_path / "reference"
    store.rename(reference)
    shards = len(json.loads((reference / "metadata.json").read_text())["shards"])
    assert shards > 8
    command = [
        *STREAMPACK,
        "pack",
        str(corpus),
        "-o",
        str(store),
        "-q",
        "--block-size",
        str(settings["block_size"]),
        "--batch-mb",
        str(settings["batch_bytes"] / (1 << 20)),
        "--shard-mb",
        str(settings["shard_bytes"] / (1 << 20)),
        "--max-document-bytes",
        str(settings["max_document_bytes"]),
    ]
    rng = random.Random(6)
    killed = 0
    for _trial in range(3):
        # Up to two kills per build, at a random shard and a random moment after it.
        for _kill in range(rng.randint(1, 2)):
            # A run that continues a build is killed after it committed at least one more shard.
            start = _committed(store) + 1
            if start >= shards:
                break
            after = rng.randint(start, shards - 1)
            killed += _run_until_killed(command, store, after, rng.uniform(0, 0.05))
        if not (store / "metadata.json").is_file():
            finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
            assert finished.returncode == 0, finished.stderr
        assert_same_store(reference, store)
        assert (
            subprocess.run([*STREAMPACK, "verify", str(store)], capture_output=True).returncode == 0
        )
        shutil.rmtree(store)
    assert killed >= 3


def test_cli_append_and_refusals(tmp_path, qwen, monkeypatch):
    first = _write_lines(tmp_path / "first.txt", 1, 100)
    second = _write_lines(tmp_path / "second.txt", 2, 100)
    store = tmp_path / "store"
    streampack.pack([str(first)], store, tokenizer=qwen, block_size=32)
    appended = subprocess.run(
        [*STREAMPACK, "pack", second, "-o", store, "--block-size", "32", "--append", "--json"],
        capture_output=True,
        text=True,
    )
    assert appended.returncode == 0, appended.stderr
    assert json.loads(appended.stdout)["documents"] == 100
    assert TokenStore(store).metadata["documents"] == 200
    both = subprocess.run(
        [*STREAMPACK, "pack", second, "-o", store, "--append", "--overwrite"],
        capture_output=True,
        text=True,
    )
    assert both.returncode == 2 and "pick one" in both.stderr

    unfinished = tmp_path / "unfinished"
    with monkeypatch.context() as patch:
        stop_after_journal_writes(patch, 3)
        with pytest.raises(Stop):
            streampack.pack([str(first)], unfinished, tokenizer=qwen, **SETTINGS)
    other = subprocess.run(
        [*STREAMPACK, "pack", first, "-o", unfinished, "--block-size", "16"],
        capture_output=True,
        text=True,
    )
    assert other.returncode == 1
    (line,) = other.stderr.strip().splitlines()
    assert line.startswith("streampack: error:")
    assert "block_size 32 before, 16 now" in line and "read.batch_bytes 2048 before" in line
