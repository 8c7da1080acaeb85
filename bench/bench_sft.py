"""Benchmark `streampack.stream_sft` against MedicalGPT's `datasets` streaming SFT path.

    python bench/bench_sft.py [--records 200000] [--max-length 2048] [--repeat 3] [--json OUT]

Builds `bench/out/sft-N` with `../shared/bench/make_corpus.py sft` when absent. Each case runs
in its own process on the same files (own peak RSS, no shared warm caches):

- `datasets-streaming`: `load_dataset("json", streaming=True)` and a batched `map` that renders
  each ShareGPT conversation turn by turn with Qwen's chatml markers and tokenizes it with the
  HF fast tokenizer, labels -100 on the prompt parts, as MedicalGPT's SFT script does;
- `streampack-grouped`: `stream_sft` with length grouping (batch 8), iterated fully;
- `streampack-in-order`: the same without grouping, for its padding ratio;
- `streampack-packed`: `stream_sft(..., pack=True)`, rows of `max_length` (batch 8).

`--repeat N` runs every case N times, round by round, and keeps each case's median run.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
MAKE_CORPUS = REPO.parent / "shared/bench/make_corpus.py"
OUT = BENCH / "out"
CASES = ("datasets-streaming", "streampack-grouped", "streampack-in-order", "streampack-packed")
REFERENCE = "datasets-streaming"
BATCH_SIZE = 8
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def _datasets_streaming(files: list[str], max_length: int) -> dict:
    from datasets import load_dataset
    from transformers import PreTrainedTokenizerFast

    from streampack.tokenize import load_tokenizer

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=load_tokenizer(None).path, eos_token="<|endoftext|>"
    )

    def preprocess(examples):
        input_ids, labels = [], []
        for conversation in examples["conversations"]:
            ids: list[int] = []
            label: list[int] = []
            turns = [(ROLES.get(t["from"], t["from"]), t["value"]) for t in conversation]
            for index in range(0, len(turns) - 1, 2):
                (_, question), (_, answer) = turns[index], turns[index + 1]
                prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
                source = tokenizer.encode(prompt, add_special_tokens=False)
                target = tokenizer.encode(f"{answer}<|im_end|>\n", add_special_tokens=False)
                ids += source + target
                label += [-100] * len(source) + target
            input_ids.append(ids[:max_length])
            labels.append(label[:max_length])
        return {"input_ids": input_ids, "labels": labels}

    started = time.perf_counter()
    dataset = load_dataset("json", data_files=files, split="train", streaming=True)
    dataset = dataset.map(preprocess, batched=True, remove_columns=["conversations"])
    samples = tokens = 0
    for example in dataset:
        samples += 1
        tokens += len(example["input_ids"])
    return {"seconds": time.perf_counter() - started, "samples": samples, "tokens": tokens}


def _streampack(files: list[str], max_length: int, grouped: bool, packed: bool) -> dict:
    import streampack

    tokenizer = streampack.load_tokenizer(None)
    started = time.perf_counter()
    stream = streampack.stream_sft(
        files,
        tokenizer,
        max_length=max_length,
        group_by_length=grouped,
        batch_size=BATCH_SIZE,
        pack=packed,
    )
    for _ in stream:
        pass
    report = stream.report
    samples = report["samples"]
    return {
        "seconds": time.perf_counter() - started,
        "samples": samples,
        "tokens": report["tokens"],
        "padding_ratio": report["padding_ratio"],
        "backend": report["backend"],
    }


def run_case(name: str, files: list[str], max_length: int) -> dict:
    if name == "datasets-streaming":
        result = _datasets_streaming(files, max_length)
    else:
        result = _streampack(
            files,
            max_length,
            grouped=name == "streampack-grouped",
            packed=name == "streampack-packed",
        )
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _corpus(records: int) -> list[str]:
    folder = OUT / f"sft-{records}"
    if not folder.is_dir() or not list(folder.glob("part-*.jsonl")):
        command = [sys.executable, str(MAKE_CORPUS), "sft", str(folder), "--files", "4"]
        subprocess.run([*command, "--records", str(records)], check=True)
    return sorted(str(path) for path in folder.glob("part-*.jsonl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the median is kept")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.files, args.max_length)))
        return

    files = _corpus(args.records)
    size = sum(os.path.getsize(path) for path in files)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    runs: dict[str, list[dict]] = {name: [] for name in args.only.split(",")}
    for round_number in range(args.repeat):
        for name in runs:
            command = [sys.executable, __file__, "--case", name]
            command += ["--max-length", str(args.max_length), "--files", *files]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                sys.exit(f"case {name} failed:\n{done.stderr[-2000:]}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_number + 1} {name}: {runs[name][-1]}", file=sys.stderr)
    results = {}
    for name, done_runs in runs.items():
        median = statistics.median_low(run["seconds"] for run in done_runs)
        results[name] = next(run for run in done_runs if run["seconds"] == median)
        results[name]["all_seconds"] = [round(run["seconds"], 2) for run in done_runs]

    reference = results.get(REFERENCE)
    print(
        f"{args.records:,} records, {len(files)} files, {size / 1e6:.1f} MB, "
        f"max_length {args.max_length}, batch {BATCH_SIZE}, median of {args.repeat}"
    )
    print("| case | seconds | samples/s | x datasets streaming | peak RSS MB | padding |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        rate = result["samples"] / result["seconds"]
        ratio = reference["seconds"] / result["seconds"] if reference else float("nan")
        padding = f"{result['padding_ratio']:.1%}" if "padding_ratio" in result else "-"
        print(
            f"| {name} | {result['seconds']:.2f} | {rate:,.0f} | {ratio:.2f} | "
            f"{result['peak_rss_mb']:.0f} | {padding} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"records": args.records, "results": results}, indent=2))


if __name__ == "__main__":
    main()
