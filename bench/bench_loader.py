"""Data-loading throughput as a training loop sees it: samples/s out of a torch DataLoader.

    python bench/bench_loader.py [--corpus DIR | --lines N] [--workers 0,2] [--max-samples N]

Cases, each with `num_workers` 0 and 2, each in its own process on the same corpus files:
streampack streaming (`StreamDataset`), streampack from a store (`StoreIterableDataset`, packed
before the timing starts), and `datasets` streaming with MedicalGPT's batched tokenize and
`group_texts` maps (as bench_pack.py's datasets-streaming case). Blocks of 1024, batches of 8.
Prints a markdown table and writes bench/out/bench_loader.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
MAKE_CORPUS = REPO.parent / "shared/bench/make_corpus.py"
DEFAULT_CORPUS = OUT / "corpus-20000"
BLOCK_SIZE = 1024
BATCH_SIZE = 8
CASES = ("streampack-stream", "streampack-store", "datasets-streaming")

sys.path.insert(0, str(BENCH))


def corpus_files(corpus: Path) -> list[str]:
    return sorted(str(path) for path in corpus.glob("*.txt"))


def loader_for(case: str, corpus: Path, store: Path, workers: int):
    import torch

    import streampack
    from streampack.torch import DataLoader, StoreIterableDataset, StreamDataset

    if case == "streampack-stream":
        dataset = StreamDataset(streampack.stream(corpus_files(corpus), block_size=BLOCK_SIZE))
        return DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=workers)
    if case == "streampack-store":
        dataset = StoreIterableDataset(store, seed=0)
        return DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=workers)
    # bench_pack's group_texts cuts blocks of its BLOCK_SIZE, 1024 as here.
    from bench_pack import _hf_tokenizer, group_texts
    from datasets import load_dataset

    tokenizer = _hf_tokenizer(streampack.load_tokenizer(None).path)
    raw = load_dataset(
        "text", data_files={"train": corpus_files(corpus)}, streaming=True, keep_linebreaks=True
    )["train"]
    blocks = raw.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
    blocks = blocks.map(group_texts, batched=True).with_format("torch")
    return torch.utils.data.DataLoader(blocks, batch_size=BATCH_SIZE, num_workers=workers)


def run_case(case: str, corpus: Path, store: Path, workers: int, max_samples: int) -> dict:
    started = time.perf_counter()
    loader = loader_for(case, corpus, store, workers)
    samples = tokens = first_size = 0
    first = None
    for batch in loader:
        if first is None:
            first = time.perf_counter() - started
            first_size = len(batch["input_ids"])
        samples += len(batch["input_ids"])
        tokens += int(batch["input_ids"].numel())
        if max_samples and samples >= max_samples:
            break
    seconds = time.perf_counter() - started
    return {
        "case": case,
        "workers": workers,
        "samples": samples,
        "seconds": round(seconds, 3),
        "samples_per_second": round(samples / seconds, 1),
        "tokens_per_second": round(tokens / seconds),
        "first_batch_seconds": round(first or 0.0, 3),
        # After the first batch: the rate a training loop sees once loading has started.
        "steady_samples_per_second": round(
            (samples - first_size) / max(seconds - (first or 0.0), 1e-9), 1
        ),
    }


def ensure_corpus(args) -> Path:
    if args.corpus:
        return args.corpus
    if not args.lines:
        return DEFAULT_CORPUS
    corpus = OUT / f"corpus-{args.lines}"
    if not corpus.is_dir():
        command = [sys.executable, str(MAKE_CORPUS), "pretrain", str(corpus)]
        subprocess.run([*command, "--lines", str(args.lines), "--files", "8"], check=True)
    return corpus


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help=f"corpus folder (default {DEFAULT_CORPUS})")
    parser.add_argument("--lines", type=int, help="build a corpus of this many lines instead")
    parser.add_argument("--workers", default="0,2", help="DataLoader workers to try")
    parser.add_argument("--max-samples", type=int, default=0, help="stop each case after this")
    parser.add_argument("--only", default=",".join(CASES), help=f"cases: {','.join(CASES)}")
    parser.add_argument("--json", type=Path, default=OUT / "bench_loader.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        case, workers = args.child.split(":")
        result = run_case(case, args.corpus, args.store, int(workers), args.max_samples)
        print(json.dumps(result))
        return
    corpus = ensure_corpus(args)
    if not corpus_files(corpus):
        parser.error(f"{corpus}: no .txt files; give --corpus or --lines")
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / f"loader-store-{corpus.name}"
    cases = [name for name in args.only.split(",") if name]
    if "streampack-store" in cases:
        import streampack

        streampack.pack(corpus_files(corpus), store, block_size=BLOCK_SIZE, overwrite=True)
    results = []
    for case in cases:
        for workers in (int(w) for w in args.workers.split(",")):
            command = [sys.executable, __file__, "--child", f"{case}:{workers}"]
            command += ["--corpus", str(corpus), "--store", str(store)]
            command += ["--max-samples", str(args.max_samples)]
            done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{case} with {workers} workers failed")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"\ncorpus {corpus} ({len(corpus_files(corpus))} files), blocks of {BLOCK_SIZE}, "
        f"batches of {BATCH_SIZE}\n"
    )
    print("| case | workers | samples | seconds | samples/s | after 1st batch | first batch s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['case']} | {r['workers']} | {r['samples']} | {r['seconds']} | "
            f"{r['samples_per_second']} | {r['steady_samples_per_second']} | "
            f"{r['first_batch_seconds']} |"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"corpus": str(corpus), "results": results}, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
