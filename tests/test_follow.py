"""Follow mode: files that arrive while a consumer reads are consumed once each, in order, and
a restart goes on with the new ones; a store that grows is seen by a following reader."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import streampack
from streampack.store import verify_store

SETTLE = 0.3


def _documents(ids: list[np.ndarray], tokenizer) -> list[str]:
    """The documents of concatenated real tokens, split at EOS."""
    text = tokenizer.decode(np.concatenate(ids)) if ids else ""
    eos = tokenizer.decode([tokenizer.eos_id])
    return [part for part in text.split(eos) if part]


def _write_files(folder: Path, names: list[str], slow: str | None = None) -> list[str]:
    """Each file holds two documents; all written to a temporary name and renamed, but `slow`,
    written in place in two halves with a pause shorter than the settle time between them."""
    written = []
    for name in names:
        docs = [f"{name} first document\n", f"{name} second document\n"]
        if name == slow:
            with open(folder / name, "w") as handle:
                handle.write(docs[0])
                handle.flush()
                time.sleep(SETTLE / 3)
                handle.write(docs[1])
        else:
            (folder / f"{name}.tmp").write_text("".join(docs))
            os.replace(folder / f"{name}.tmp", folder / name)
        written += docs
        time.sleep(SETTLE * 2)
    return written


def _follow(folder: Path, state: Path, qwen):
    stream = streampack.stream(
        folder,
        qwen,
        block_size=8,
        remainder="pad",
        follow=True,
        settle=SETTLE,
        poll=0.02,
        follow_state=state,
    )
    got: list[np.ndarray] = []

    def consume():
        for block in stream:
            got.append(block["input_ids"][: int(block["attention_mask"].sum())])

    consumer = threading.Thread(target=consume)
    consumer.start()
    return stream, got, consumer


def test_files_arriving_while_a_stream_reads_are_consumed_once_in_order(tmp_path, qwen):
    folder, state = tmp_path / "incoming", tmp_path / "follow.json"
    folder.mkdir()
    (folder / ".hidden.txt").write_text("never read\n")
    (folder / "skipped.txt.partial").write_text("never read either\n")
    stream, got, consumer = _follow(folder, state, qwen)
    expected = _write_files(folder, ["b.txt", "a.txt", "c.txt"], slow="a.txt")
    time.sleep(SETTLE * 3)
    stream.stop()
    consumer.join(10)
    assert not consumer.is_alive()
    assert _documents(got, qwen) == expected
    consumed = [entry["path"] for entry in json.loads(state.read_text())["files"]]
    assert consumed == [str(folder / name) for name in ("b.txt", "a.txt", "c.txt")]

    # A restart from the state reads only what arrived since.
    stream, got, consumer = _follow(folder, state, qwen)
    expected = _write_files(folder, ["d.txt"])
    time.sleep(SETTLE * 3)
    stream.stop()
    consumer.join(10)
    assert _documents(got, qwen) == expected


def test_a_following_store_reader_sees_appended_blocks(tmp_path, qwen):
    (tmp_path / "one.txt").write_text("".join(f"first part line {i}\n" for i in range(50)))
    (tmp_path / "two.txt").write_text("".join(f"second part line {i}\n" for i in range(50)))
    store = tmp_path / "store"
    settings = dict(block_size=16, token_stats=False)
    streampack.pack([tmp_path / "one.txt"], store, qwen, **settings)
    reader = streampack.TokenStore(store, follow=True, poll=0.02)
    first = len(reader)
    seen = []
    consumer = threading.Thread(target=lambda: seen.extend(b["input_ids"] for b in reader))
    consumer.start()
    time.sleep(0.2)
    assert len(seen) == first
    streampack.pack([tmp_path / "two.txt"], store, qwen, append=True, **settings)
    whole = streampack.TokenStore(store)
    deadline = time.monotonic() + 10
    while len(seen) < len(whole) and time.monotonic() < deadline:
        time.sleep(0.02)
    reader.stop()
    consumer.join(10)
    assert len(whole) > first and len(seen) == len(whole)
    assert all(np.array_equal(seen[i], whole[i]["input_ids"]) for i in range(len(whole)))


def test_pack_follow_appends_arrivals_and_stops_cleanly_on_ctrl_c(tmp_path, qwen):
    folder, store = tmp_path / "incoming", tmp_path / "store"
    folder.mkdir()
    command = [sys.executable, "-m", "streampack", "pack", str(folder), "-o", str(store)]
    command += ["--follow", "--settle", str(SETTLE), "--block-size", "8", "--remainder", "pad"]
    command += ["-q"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        expected = _write_files(folder, ["a.txt", "b.txt"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (store / "metadata.json").is_file():
                files = json.loads((store / "metadata.json").read_text())["files"]
                if len(files) == 2:
                    break
            time.sleep(0.05)
        reader = streampack.TokenStore(store)
        ids = [reader[i]["input_ids"][: int(reader.lengths[i])] for i in range(len(reader))]
        assert _documents(ids, qwen) == expected
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert verify_store(store) == []
    # The same command goes on with what is new.
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        expected += _write_files(folder, ["c.txt"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            files = json.loads((store / "metadata.json").read_text())["files"]
            if len(files) == 3:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader = streampack.TokenStore(store)
    ids = [reader[i]["input_ids"][: int(reader.lengths[i])] for i in range(len(reader))]
    assert _documents(ids, qwen) == expected
    assert verify_store(store) == []


def test_pack_follow_finishes_an_interrupted_build_first(tmp_path, qwen, monkeypatch):
    from test_build import Stop, stop_after_journal_writes

    from streampack.api import pack_follow

    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "a.txt").write_text("".join(f"line number {i} of the file\n" for i in range(400)))
    settings = dict(
        block_size=32, batch_bytes=2048, shard_bytes=2000, remainder="pad", token_stats=False
    )
    store = tmp_path / "store"
    with monkeypatch.context() as patch:
        stop_after_journal_writes(patch, 3)
        # Should the stop never come, the watch ends after 20 s instead of hanging the test.
        deadline = threading.Event()
        timer = threading.Timer(20, deadline.set)
        timer.start()
        with pytest.raises(Stop):
            pack_follow(
                folder, store, tokenizer=qwen, settle=0, poll=0.02, stop=deadline, **settings
            )
        timer.cancel()
    assert (store / "build.json").is_file() and not (store / "metadata.json").exists()
    stop = threading.Event()
    stop.set()
    appends = pack_follow(folder, store, tokenizer=qwen, settle=0, poll=0.02, stop=stop, **settings)
    assert appends == 1
    assert verify_store(store) == []
    assert [entry["path"] for entry in streampack.TokenStore(store).metadata["files"]] == [
        str(folder / "a.txt")
    ]
    reference = tmp_path / "reference"
    streampack.pack([folder / "a.txt"], reference, qwen, **settings)
    whole, found = streampack.TokenStore(reference), streampack.TokenStore(store)
    assert len(whole) == len(found)
    assert all(
        np.array_equal(whole.block_tokens(i), found.block_tokens(i)) for i in range(len(whole))
    )
