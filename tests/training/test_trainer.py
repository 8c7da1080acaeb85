"""The Trainer on real data: examples/train_qwen2.py trains, saves, resumes on the exact batch;
torchrun with two gloo ranks splits the data with no overlap and nothing missing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")

import streampack
from streampack import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def train(data, output, *args):
    command = [sys.executable, str(EXAMPLES / "train_qwen2.py"), "--data", str(data)]
    command += ["--output-dir", str(output), "--block-size", "32", "--logging-steps", "2"]
    command += [str(arg) for arg in args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def records(path) -> dict[int, str]:
    lines = Path(path).read_text().splitlines()
    return {entry["step"]: entry["batch"] for entry in map(json.loads, lines)}


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "steps", "save"), [("stream", 12, 6), ("store", 4, 2)])
def test_train_save_and_resume_on_the_exact_batch(medicalgpt, tmp_path, mode, steps, save):
    data = medicalgpt / "pretrain"
    out = tmp_path / "run"
    first = train(
        data,
        out,
        "--mode",
        mode,
        "--max-steps",
        steps,
        "--save-steps",
        save,
        "--record",
        tmp_path / "a.jsonl",
    )
    assert first["steps"] == steps and 5e6 < first["parameters"] < 2e7
    if mode == "stream":
        assert first["losses"][-1] < first["losses"][0] - 0.5
    checkpoint = out / f"checkpoint-{save}"
    state = json.loads((checkpoint / "streampack_data_state.json").read_text())
    assert state["taken"] == save * 4
    resumed = train(
        data,
        out,
        "--mode",
        mode,
        "--max-steps",
        save + 2,
        "--save-steps",
        100,
        "--resume",
        checkpoint,
        "--record",
        tmp_path / "b.jsonl",
    )
    assert resumed["steps"] == save + 2
    uninterrupted, after = records(tmp_path / "a.jsonl"), records(tmp_path / "b.jsonl")
    assert sorted(after) == [save, save + 1]
    assert after[save] == uninterrupted[save] and after[save + 1] == uninterrupted[save + 1]


def test_trainer_without_length_or_max_steps_stops_at_init(tmp_path, qwen):
    from transformers import Trainer, TrainingArguments

    sys.path.insert(0, str(EXAMPLES))
    try:
        from train_qwen2 import tiny_qwen2
    finally:
        sys.path.remove(str(EXAMPLES))
    from streampack.torch import StreamDataset, StreampackCallback

    source = tmp_path / "a.txt"
    source.write_text("".join(f"line {i} fever\n" for i in range(200)))
    stream = streampack.stream(source, tokenizer=qwen, block_size=16)
    model = tiny_qwen2(qwen.vocab_size, 16, 16, 1)
    args = TrainingArguments(
        output_dir=str(tmp_path / "o"),
        use_cpu=True,
        report_to=[],
        per_device_train_batch_size=4,
        num_train_epochs=2,
    )
    train = StreamDataset(stream)
    # The Trainer checks this in its __init__, before the callback; either way, before training.
    with pytest.raises((ConfigError, ValueError), match="max_steps"):
        Trainer(model=model, args=args, train_dataset=train, callbacks=[StreampackCallback(train)])
    blocks = len(list(stream))
    train = StreamDataset(stream, length=blocks)
    trainer = Trainer(
        model=model, args=args, train_dataset=train, callbacks=[StreampackCallback(train)]
    )
    assert args.ignore_data_skip
    assert len(trainer.get_train_dataloader()) == blocks // 4


@pytest.mark.slow
def test_torchrun_two_ranks_partition_the_data(tmp_path, qwen):
    source = tmp_path / "a.txt"
    lines = [f"line {i}: " + "fever cough " * (i % 7) + "\n" for i in range(300)]
    # Distinct lines, and a block count that is not a multiple of 2 ranks x 4.
    while True:
        source.write_text("".join(lines))
        if len(list(streampack.stream(source, tokenizer=qwen, block_size=32))) % 8:
            break
        lines.append(f"one more line {len(lines)}\n")
    streampack.pack(source, tmp_path / "store", block_size=32, remainder="drop")
    result_path = tmp_path / "result.json"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        str(EXAMPLES / "check_ranks.py"),
        "--data",
        str(source),
        "--store",
        str(tmp_path / "store"),
        "--block-size",
        "32",
        "--batch-size",
        "4",
        "--workers",
        "2",
        "--out",
        str(result_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(result_path.read_text())
    assert result["world_size"] == 2 and result["expected"] % 8 != 0
    for name in ("stream", "store"):
        part = result[name]
        assert part["batches"][0] == part["batches"][1]
        assert part["extra"] == 0 and part["missing"] == 0
    # drop keeps whole rounds of 8; the store pads its last round instead.
    assert result["stream"]["kept"] == result["expected"] // 8 * 8
    assert result["store"]["kept"] == result["expected"]
