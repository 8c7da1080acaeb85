"""Benchmark scale-out: the local engine against Ray on 2 local workers, and Ray's cost per task.

    python bench/bench_scale.py [--corpus DIR] [--split-mb 8] [--repeat 3] [--json OUT]
    python bench/bench_scale.py --corpus /tmp/small --tiny-mb 1 --repeat 1     # a quick check

Every case runs in its own process on the same files (own peak RSS, a fresh Ray):

- `local`: `streampack.pack` with the local engine, no split (the reference);
- `local-split`: the local engine given the task split of `--split-mb` (the same units as Ray,
  run one after another in one process on all cores);
- `ray-2`: `--engine ray` on a local Ray instance of 2 CPUs: 2 tasks at a time, 1 core each;
- `overhead-local`, `overhead-ray`: the first `--tiny-mb` of one corpus file packed as 1 unit and
  as units of 4 KiB (the smallest split); (seconds(many) - seconds(one)) / (units - 1) is the
  cost of one more unit. The Ray figure less the local one is Ray's own cost per task;
- `ray-noop`: 2,000 empty Ray tasks, for Ray's bare round trip on this machine.

`seconds` is the build (ray start and tokenizer loading on the driver left out; Ray start is
`ray_start_seconds`); tokens/s is document tokens over `seconds`. Stores and inputs go to
`bench/out/scale-tmp/` and are deleted; results go to `bench/out/scale.json` (or `--json`).
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
OUT = BENCH / "out"
TMP = OUT / "scale-tmp"
DEFAULT_CORPUS = Path(__file__).resolve().parent / "out" / "corpus-200000"
CASES = ("local", "local-split", "ray-2", "overhead-local", "overhead-ray", "ray-noop")
TINY_SPLIT = 4096


def _pack(sources, output, **options) -> dict:
    import streampack

    shutil.rmtree(output, ignore_errors=True)
    report = streampack.pack(sources, output, block_size=1024, overwrite=True, **options)
    shutil.rmtree(output, ignore_errors=True)
    return report


def _start_ray(cpus: int) -> float:
    from streampack.scale.ray_engine import connect

    started = time.perf_counter()
    connect(None, cpus)
    return time.perf_counter() - started


def _result(report: dict, **extra) -> dict:
    return {
        "seconds": report["seconds"],
        "total_seconds": report["total_seconds"],
        "tokens": report["tokens"],
        "tokens_per_second": round(report["tokens"] / max(report["seconds"], 1e-9)),
        "units": report.get("units", 1),
        "retries": report.get("retries", 0),
        "peak_rss_mb": report["peak_rss_mb"],
        **extra,
    }


def _tiny_input(corpus: list[str], megabytes: float) -> str:
    """The first `megabytes` of the first corpus file, cut at a line end."""
    TMP.mkdir(parents=True, exist_ok=True)
    data = Path(corpus[0]).read_bytes()[: int(megabytes * (1 << 20))]
    path = TMP / "tiny.txt"
    path.write_bytes(data[: data.rfind(b"\n") + 1])
    return str(path)


def _overhead(engine: str, tiny: str) -> dict:
    extra = {}
    if engine == "ray":
        extra["ray_start_seconds"] = round(_start_ray(2), 3)
    size = os.path.getsize(tiny)
    # One unit, then the same bytes as many units of 4 KiB; a warm-up run loads the workers.
    _pack([tiny], TMP / "warm", engine=engine, split_bytes=size + 1)
    one = _pack([tiny], TMP / "one", engine=engine, split_bytes=size + 1)
    many = _pack([tiny], TMP / "many", engine=engine, split_bytes=TINY_SPLIT)
    per_unit = (many["seconds"] - one["seconds"]) / max(1, many["units"] - 1)
    return {
        "seconds": many["seconds"],
        "one_unit_seconds": one["seconds"],
        "many_units_seconds": many["seconds"],
        "units": many["units"],
        "seconds_per_extra_unit": round(per_unit, 5),
        "tokens": many["tokens"],
        "peak_rss_mb": many["peak_rss_mb"],
        **extra,
    }


def _noop() -> dict:
    start = _start_ray(2)
    import ray

    @ray.remote(num_cpus=1)
    def nothing(value):
        return value

    ray.get([nothing.remote(i) for i in range(200)])  # warm-up: worker processes started
    started = time.perf_counter()
    ray.get([nothing.remote(i) for i in range(2000)])
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "units": 2000,
        "seconds_per_task": round(seconds / 2000, 6),
        "ray_start_seconds": round(start, 3),
    }


def run_case(case: str, corpus: list[str], split_mb: float, tiny_mb: float) -> dict:
    split = int(split_mb * (1 << 20))
    if case == "local":
        return _result(_pack(corpus, TMP / case))
    if case == "local-split":
        return _result(_pack(corpus, TMP / case, split_bytes=split))
    if case == "ray-2":
        start = _start_ray(2)
        return _result(
            _pack(corpus, TMP / case, engine="ray", split_bytes=split),
            ray_start_seconds=round(start, 3),
        )
    if case == "overhead-local":
        return _overhead("local", _tiny_input(corpus, tiny_mb))
    if case == "overhead-ray":
        return _overhead("ray", _tiny_input(corpus, tiny_mb))
    if case == "ray-noop":
        return _noop()
    raise SystemExit(f"unknown case {case!r}; one of {', '.join(CASES)}")


def _in_process(case: str, args) -> dict:
    command = [sys.executable, __file__, "--case", case, "--corpus", str(args.corpus)]
    command += ["--split-mb", str(args.split_mb), "--tiny-mb", str(args.tiny_mb)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(results: dict) -> str:
    rows = [
        "| case | seconds | M tokens/s | units | per extra unit (ms) | peak RSS MB | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for case, result in results.items():
        rate = result.get("tokens_per_second")
        per = result.get("seconds_per_extra_unit", result.get("seconds_per_task"))
        notes = []
        if "ray_start_seconds" in result:
            notes.append(f"ray start {result['ray_start_seconds']:.1f} s")
        if "one_unit_seconds" in result:
            notes.append(f"1 unit {result['one_unit_seconds']:.2f} s")
        rows.append(
            f"| {case} | {result['seconds']:.2f} | {'' if rate is None else f'{rate / 1e6:.2f}'} "
            f"| {result.get('units', '')} | {'' if per is None else f'{per * 1e3:.2f}'} "
            f"| {result.get('peak_rss_mb', '')} | {', '.join(notes)} |"
        )
    local, ray_case = results.get("overhead-local"), results.get("overhead-ray")
    if local and ray_case:
        own = ray_case["seconds_per_extra_unit"] - local["seconds_per_extra_unit"]
        rows.append(
            f"\nRay's own cost per task: {own * 1e3:.2f} ms (overhead-ray - overhead-local)"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--split-mb", type=float, default=8.0)
    parser.add_argument("--tiny-mb", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--json", type=Path, default=OUT / "scale.json")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"no corpus folder at {args.corpus}; pass --corpus DIR")
    corpus = sorted(str(path) for path in args.corpus.iterdir() if path.is_file())
    if args.case:
        result = run_case(args.case, corpus, args.split_mb, args.tiny_mb)
        print(json.dumps(result))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cases = [case for case in args.only.split(",") if case]
    runs: dict[str, list[dict]] = {case: [] for case in cases}
    try:
        for _ in range(args.repeat):
            for case in cases:
                runs[case].append(_in_process(case, args))
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    results = {}
    for case, done in runs.items():
        middle = statistics.median_low([run["seconds"] for run in done])
        results[case] = {**next(r for r in done if r["seconds"] == middle), "runs": done}
    size = sum(os.path.getsize(path) for path in corpus)
    print(
        f"corpus {args.corpus} ({size / 1e6:.0f} MB), split {args.split_mb} MB, "
        f"median of {args.repeat}\n"
    )
    print(_table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"corpus": str(args.corpus), "results": results}, indent=2))


if __name__ == "__main__":
    main()
