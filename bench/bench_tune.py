"""Benchmark `--batch-size auto` against a sweep of fixed batch sizes (documents per tokenizer
batch), on the 200k-line corpus and on a corpus of long documents.

    python bench/bench_tune.py                                    # both corpora, 3 repeats
    python bench/bench_tune.py --corpus bench/out/corpus-20000 --repeat 1 --long-lines 20
    python bench/bench_tune.py --json bench/out/tune.json

The long-document corpus is made once from the 200k-line corpus, `--long-lines` lines joined
into one document (bench/out/corpus-long-N/). Every run is its own `streampack pack` process
(--no-token-stats, a fresh store); the figure compared is the report's tokens per second (the
pipeline, tokenizer loading left out); peak RSS is the kernel's figure (wait4's ru_maxrss). The
verdict: auto's median within 5% of the best fixed size's median.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_pack import child_env, machine_info, print_machine, streampack_cli  # noqa: E402

REPO = BENCH.parent
OUT = BENCH / "out"
DEFAULT_CORPORA = (
    OUT / "corpus-200000",
    # The lead's checkout keeps the corpus; worktrees beside it read it from there.
    REPO.parent / "main" / "bench" / "out" / "corpus-200000",
)
# Fixed sizes swept, in documents per tokenizer batch: from well under to above what a 4 MB
# read batch holds (about 9,000 lines of the corpus, or 45 long documents).
LINE_SIZES = (64, 256, 1024, 4096, 16384)
LONG_SIZES = (1, 2, 4, 8, 16, 64)
TOLERANCE = 0.05


def find_corpus(given: Path | None) -> Path:
    for corpus in [given] if given is not None else DEFAULT_CORPORA:
        if corpus is not None and any(corpus.glob("part-*.txt")):
            return corpus
    raise SystemExit(
        "no corpus: pass --corpus, or make one with "
        "`python ../shared/bench/make_corpus.py pretrain bench/out/corpus-200000 --lines 200000`"
    )


def long_corpus(source: Path, lines: int) -> Path:
    """Documents of `lines` lines of `source` each, joined with spaces (made once)."""
    folder = OUT / f"corpus-long-{lines}"
    if any(folder.glob("part-*.txt")):
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in sorted(source.glob("part-*.txt")):
        with path.open(encoding="utf-8") as read, (partial / path.name).open("w") as write:
            held: list[str] = []
            for line in read:
                if line.strip():
                    held.append(line.strip())
                if len(held) == lines:
                    write.write(" ".join(held) + "\n")
                    held = []
            if held:
                write.write(" ".join(held) + "\n")
    os.replace(partial, folder)
    return folder


def run_pack(corpus: Path, batch_size: str, name: str) -> dict:
    store = OUT / "tune-store"
    shutil.rmtree(store, ignore_errors=True)
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    argv = [streampack_cli(), "pack", str(corpus), "-o", str(store), "--overwrite", "--json"]
    argv += ["--no-token-stats", "--batch-size", batch_size, "-q"]
    stdout, stderr = logs / f"tune-{name}.out", logs / f"tune-{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=child_env())
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        tail = stderr.read_text(errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"{name} failed: " + " / ".join(tail))
    report = json.loads(stdout.read_text(encoding="utf-8"))
    shutil.rmtree(store, ignore_errors=True)
    return {
        "wall_seconds": round(wall, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "tokens_per_second": report["tokens_per_second"],
        "tokens": report["tokens"],
        "documents_per_batch": report["documents_per_batch"],
        "batch_size_chosen_mb": report.get("batch_size_chosen_mb"),
        "batch_size_tokens_per_second": report.get("batch_size_tokens_per_second"),
    }


def sweep(label: str, corpus: Path, sizes: tuple[int, ...], repeat: int) -> dict:
    settings = ["auto", *map(str, sizes)]
    runs: dict[str, list[dict]] = {setting: [] for setting in settings}
    # Interleaved rounds, so that a change in the machine's load touches every setting alike.
    for round_ in range(repeat):
        for setting in settings:
            runs[setting].append(run_pack(corpus, setting, f"{label}-{setting}-{round_}"))
    rows = {}
    for setting, results in runs.items():
        rows[setting] = {
            "tokens_per_second": statistics.median(r["tokens_per_second"] for r in results),
            "wall_seconds": statistics.median(r["wall_seconds"] for r in results),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "documents_per_batch": statistics.median(r["documents_per_batch"] for r in results),
            "runs": results,
        }
    best = max(sizes, key=lambda size: rows[str(size)]["tokens_per_second"])
    ratio = rows["auto"]["tokens_per_second"] / rows[str(best)]["tokens_per_second"]
    return {
        "corpus": str(corpus),
        "rows": rows,
        "best_fixed": best,
        "auto_over_best": round(ratio, 4),
        "auto_within_5_percent": ratio >= 1 - TOLERANCE,
        "auto_chose_mb": [r["batch_size_chosen_mb"] for r in runs["auto"]],
    }


def print_table(label: str, result: dict) -> None:
    print(f"\n### {label}: {result['corpus']}\n")
    print("| batch size | tokens/s (median) | wall s | peak RSS MB | documents per batch |")
    print("|---|---:|---:|---:|---:|")
    for setting, row in result["rows"].items():
        print(
            f"| {setting} | {row['tokens_per_second']:,.0f} | {row['wall_seconds']:.2f} | "
            f"{row['peak_rss_mb']:.0f} | {row['documents_per_batch']:g} |"
        )
    verdict = "within" if result["auto_within_5_percent"] else "NOT within"
    print(
        f"\nauto chose {result['auto_chose_mb']} MB per batch; auto / best fixed "
        f"({result['best_fixed']} documents) = {result['auto_over_best']:.3f}, {verdict} 5%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--long-lines", type=int, default=200, help="lines per long document")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=OUT / "tune.json")
    args = parser.parse_args()
    corpus = find_corpus(args.corpus)
    machine = machine_info()
    print_machine(machine)
    results = {
        "lines": sweep("lines", corpus, LINE_SIZES, args.repeat),
        "long": sweep("long", long_corpus(corpus, args.long_lines), LONG_SIZES, args.repeat),
    }
    print_table("one document per line", results["lines"])
    print_table(f"long documents ({args.long_lines} lines each)", results["long"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, **results}, indent=2) + "\n")
    print(f"\nwritten {args.json}")


if __name__ == "__main__":
    main()
