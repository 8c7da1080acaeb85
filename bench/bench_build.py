"""Benchmark whole builds: `streampack pack` from start to end, the same build killed at about
half way and run again (how long the rest takes), and the cost of `--token-stats`.

    python bench/bench_build.py                                   # the 3,000,000-line corpus
    python bench/bench_build.py --corpus bench/out/corpus-20000 --shard-mb 1    # a quick check
    python bench/bench_build.py --repeat 3 --json bench/out/build.json

Every run is its own `streampack pack` process; wall clock is the whole process and peak RSS the
kernel's figure for it (wait4's ru_maxrss). See bench/README.md.
"""

import argparse
import filecmp
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_pack import child_env, machine_info, print_machine, streampack_cli  # noqa: E402

from streampack.report import RUN_KEYS  # noqa: E402

REPO = BENCH.parent
OUT = BENCH / "out"
DEFAULT_CORPORA = (OUT / "corpus-3000000",)
# How often the journal is read while waiting for the half-way shard; reading it costs nothing
# next to a build, and 50 ms is well inside one shard's time.
POLL_SECONDS = 0.05


def run(argv: list[str], name: str, kill_when=None) -> dict:
    """Run `argv` to its end, or until `kill_when()` is true (then SIGKILL): wall clock, peak RSS
    and the report it printed with --json."""
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / f"build-{name}.out", logs / f"build-{name}.err"
    killed = False
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=child_env())
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if kill_when is not None and not killed and kill_when():
                process.send_signal(signal.SIGKILL)
                killed = True
            time.sleep(POLL_SECONDS if kill_when is not None else 0.01)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    result = {
        "wall_seconds": round(wall, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "returncode": process.returncode,
        "killed": killed,
    }
    if not killed:
        if process.returncode != 0:
            tail = stderr.read_text(errors="replace").strip().splitlines()[-5:]
            raise SystemExit(f"{name} failed ({process.returncode}): " + " / ".join(tail))
        report = json.loads(stdout.read_text(encoding="utf-8"))
        result.update(
            seconds=report["seconds"],
            tokens=report["tokens"],
            blocks=report["blocks"],
            tokens_per_second=report["tokens_per_second"],
        )
    return result


def journal_committed(store: Path) -> tuple[int, int]:
    """Shards and blocks the build at `store` has committed so far, from its journal."""
    try:
        saved = json.loads((store / "build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0, 0
    return saved["committed"], saved["writer"]["blocks"]


def same_store(reference: Path, store: Path) -> list[str]:
    """Files that differ, but for the start time in metadata.json and run keys of report.json."""
    names = sorted(os.listdir(reference))
    if sorted(os.listdir(store)) != names:
        return [f"files: {names} against {sorted(os.listdir(store))}"]
    differ = []
    for name in names:
        if name in ("metadata.json", "report.json"):
            a, b = (json.loads((folder / name).read_text()) for folder in (reference, store))
            for key in {"created"} | RUN_KEYS | {"store"}:
                a.pop(key, None)
                b.pop(key, None)
            if a != b:
                differ.append(name)
        elif not filecmp.cmp(reference / name, store / name, shallow=False):
            differ.append(name)
    return differ


def one_round(cli: str, corpus: Path, stores: Path, shard_mb: float, round_: int) -> dict:
    full, plain, killed = stores / "full", stores / "no-token-stats", stores / "killed"
    for folder in (full, plain, killed):
        shutil.rmtree(folder, ignore_errors=True)
    base = [cli, "pack", str(corpus), "--quiet", "--json", "--shard-mb", str(shard_mb)]
    results = {"full": run([*base, "-o", str(full)], f"full-{round_}")}
    results["no-token-stats"] = run(
        [*base, "-o", str(plain), "--no-token-stats"], f"no-token-stats-{round_}"
    )
    shutil.rmtree(plain, ignore_errors=True)

    metadata = json.loads((full / "metadata.json").read_text(encoding="utf-8"))
    shards = len(metadata["shards"])
    half = max(1, math.ceil(shards / 2))
    if shards < 2:
        raise SystemExit(
            f"the build made {shards} shard; pass a smaller --shard-mb so that a kill at half "
            f"way leaves committed shards behind"
        )
    argv = [*base, "-o", str(killed)]
    killed_run = run(
        argv, f"killed-{round_}", kill_when=lambda: journal_committed(killed)[0] >= half
    )
    committed, blocks = journal_committed(killed)
    killed_run.update(
        shards_committed=committed,
        blocks_committed=blocks,
        share_committed=round(blocks / metadata["blocks"], 3) if metadata["blocks"] else None,
    )
    results["killed"] = killed_run
    resumed = run(argv, f"resumed-{round_}")
    resumed["differs_from_full"] = same_store(full, killed)
    results["resumed"] = resumed
    results["shards"] = shards
    shutil.rmtree(killed, ignore_errors=True)
    shutil.rmtree(full, ignore_errors=True)
    return results


def warm_up(cli: str, corpus: Path, stores: Path) -> None:
    """Build the tokenizer's cache and read the corpus once, so no run pays for a cold start."""
    scratch = stores / "warmup"
    shutil.rmtree(scratch, ignore_errors=True)
    subprocess.run(
        [cli, "demo", "-q", "-o", str(scratch)],
        check=True,
        env=child_env(),
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(scratch, ignore_errors=True)
    for path in sorted(corpus.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(16 << 20):
                    pass


def median(rounds: list[dict], case: str, key: str):
    values = [r[case][key] for r in rounds if r[case].get(key) is not None]
    return statistics.median(values) if values else None


def summarize(rounds: list[dict]) -> dict:
    cases = {
        case: {
            key: median(rounds, case, key)
            for key in ("wall_seconds", "seconds", "peak_rss_mb", "tokens_per_second")
        }
        for case in ("full", "no-token-stats", "killed", "resumed")
    }
    full, plain = cases["full"], cases["no-token-stats"]
    return {
        "cases": cases,
        "token_stats_overhead": (full["seconds"] - plain["seconds"]) / plain["seconds"],
        "resumed_share_of_full_wall": cases["resumed"]["wall_seconds"] / full["wall_seconds"],
        "share_committed_at_kill": median(rounds, "killed", "share_committed"),
        "identical": all(not r["resumed"]["differs_from_full"] for r in rounds),
    }


def print_table(corpus: Path, rounds: list[dict], summary: dict) -> None:
    first = rounds[0]
    print(
        f"\ncorpus {corpus} ({first['full']['tokens']:,} tokens, {first['shards']} shards), "
        f"median of {len(rounds)} round(s)\n"
    )
    print("| run | wall s | pack s | M tokens/s | peak RSS MB | notes |")
    print("|---|---:|---:|---:|---:|---|")
    notes = {
        "full": "`streampack pack` (token stats on, the default)",
        "no-token-stats": "`--no-token-stats`",
        "killed": f"SIGKILL after shard {first['killed']['shards_committed']} of "
        f"{first['shards']} ({summary['share_committed_at_kill']:.0%} of the blocks committed)",
        "resumed": "the same command again: continues from the journal; store "
        + (
            "identical to the full build" if summary["identical"] else "DIFFERS from the full build"
        ),
    }
    for case, values in summary["cases"].items():
        speed = values["tokens_per_second"]
        cells = [
            f"{values['wall_seconds']:.2f}",
            "-" if values["seconds"] is None else f"{values['seconds']:.2f}",
            "-" if speed is None else f"{speed / 1e6:.2f}",
            f"{values['peak_rss_mb']:.0f}",
        ]
        print(f"| {case} | {' | '.join(cells)} | {notes[case]} |")
    print(
        f"\n--token-stats costs {summary['token_stats_overhead']:+.1%} of the pack seconds; the "
        f"resumed run takes {summary['resumed_share_of_full_wall']:.0%} of a full build's wall "
        f"clock. `pack s` of the resumed run covers only the part it packed."
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=None, help="corpus folder (default: 3M)")
    parser.add_argument(
        "--shard-mb",
        type=float,
        default=256,
        help="--shard-mb for every build (default 256, the CLI's); the kill waits for the shard "
        "that passes half of the blocks",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are printed")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    corpus = args.corpus or next((path for path in DEFAULT_CORPORA if path.is_dir()), None)
    if corpus is None or not corpus.is_dir():
        raise SystemExit(
            f"no corpus at {args.corpus or DEFAULT_CORPORA[0]}: build it with "
            f"`python bench/bench_pack.py --lines 3000000 --only streampack-pack` or pass --corpus"
        )
    size = sum(path.stat().st_size for path in corpus.rglob("*") if path.is_file())
    stores = OUT / "build-stores"
    stores.mkdir(parents=True, exist_ok=True)
    # Two stores of about the corpus size exist at once (the full one and the resumed one).
    free = shutil.disk_usage(stores).free
    if free < 3 * size:
        raise SystemExit(f"{stores}: {free / 1e9:.1f} GB free, want {3 * size / 1e9:.1f} GB")
    machine = machine_info()
    print_machine(machine)
    cli = streampack_cli()
    warm_up(cli, corpus, stores)
    rounds = []
    for round_ in range(args.repeat):
        print(f"round {round_ + 1} of {args.repeat} ...", flush=True)
        rounds.append(one_round(cli, corpus, stores, args.shard_mb, round_))
    summary = summarize(rounds)
    print_table(corpus, rounds, summary)
    output = args.json or OUT / f"bench-build-{corpus.name}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "corpus": str(corpus),
                "corpus_bytes": size,
                "shard_mb": args.shard_mb,
                "machine": machine,
                "summary": summary,
                "rounds": rounds,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(f"\nresults: {output}")
    if not summary["identical"]:
        raise SystemExit("the resumed store differs from the full build: see the results")


if __name__ == "__main__":
    main()
