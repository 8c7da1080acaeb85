"""Benchmark streampack against MedicalGPT's `datasets` pipeline and the raw tokenizers.

    python bench/bench_pack.py [--lines 200000] [--corpus DIR] [--only NAME,...] [--json OUT]
    python bench/bench_pack.py --scale 200000,2000000

Every case runs in its own process on the same corpus files, so each has its own peak RSS and
none profits from another's warm caches inside the interpreter. See bench/README.md.
"""

import argparse
import contextlib
import importlib.metadata
import itertools
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
MAKE_CORPUS = REPO.parent / "shared/bench/make_corpus.py"
OUT = BENCH / "out"
CORPUS_FILES = 8
CORPUS_PART = re.compile(r"part-\d{5}\.txt")

BLOCK_SIZE = 1024
# The batch streampack's CLI defaults to (--batch-mb 4); the raw cases use the same, so the
# comparison is of the pipeline around the encoder, not of batch sizes.
BATCH_BYTES = 4 << 20
EOS_TOKEN = "<|endoftext|>"
# A case running longer than this is hung, not slow: datasets-streaming took 69 s for 200,000
# lines on the reference machine, so about 20 minutes for 3M.
CASE_TIMEOUT_SECONDS = 3 * 3600
# psutil polling period for the process-tree RSS. A poll scans /proc and took 1.3 ms on the
# 2-core reference machine, so 10 Hz costs the measured case about 1% of one core.
POLL_SECONDS = 0.1
# Share of the machine's CPU taken by other processes above which a case's timing is flagged.
NOISY_OTHER_CPU = 0.05

CASES = (
    "datasets-streaming",
    "datasets-full",
    "quicktok-raw",
    "tokenizers-raw",
    "streampack-pack",
    "streampack-pack-tokenizers",
    "streampack-stream-first-block",
    "streampack-stream",
)
PACK_CASES = {"streampack-pack": "quicktok", "streampack-pack-tokenizers": "tokenizers"}
REFERENCE = "datasets-streaming"
RAW = "quicktok-raw"

PACKAGES = (
    "streampack",
    "quicktok-v1",
    "tokenizers",
    "transformers",
    "datasets",
    "numpy",
    "pyarrow",
    "psutil",
)

# Targets of the project, checked at the end of a run.
MIN_SPEEDUP_VS_DATASETS = 15.0
MIN_FRACTION_OF_RAW = 0.90
MIN_TOKENIZERS_SPEEDUP_VS_DATASETS = 2.5
MAX_PEAK_RSS_MB = 400.0
MAX_FIRST_BLOCK_SECONDS = 1.0
MAX_SCALE_RSS_RATIO = 1.10
BIG_RUN_LINES = 3_000_000
MAX_BIG_RUN_SECONDS = 60.0


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def corpus_files(corpus: Path) -> list[str]:
    return [str(path) for path in sorted(corpus.glob("part-*.txt"))]


# --- cases: each runs in a fresh child process and returns what it measured ------------------


def _hf_tokenizer(tokenizer_json: str):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, eos_token=EOS_TOKEN)


def group_texts(batch: dict) -> dict:
    """MedicalGPT's grouping: concatenate one map batch, cut it into whole blocks, labels = ids.

    The tail of every batch that does not fill a block is dropped (up to 1023 tokens per 1000
    lines). MedicalGPT keeps a batch shorter than one block as a single short block; only the
    very last batch can be that short, so timing is unaffected.
    """
    joined = {key: list(itertools.chain.from_iterable(batch[key])) for key in batch}
    usable = len(joined["input_ids"]) // BLOCK_SIZE * BLOCK_SIZE
    blocks = {
        key: [values[start : start + BLOCK_SIZE] for start in range(0, usable, BLOCK_SIZE)]
        for key, values in joined.items()
    }
    blocks["labels"] = list(blocks["input_ids"])
    return blocks


def case_datasets_streaming(corpus: Path, tokenizer_json: str) -> dict:
    from datasets import load_dataset

    tokenizer = _hf_tokenizer(tokenizer_json)
    produced = 0

    def tokenize(batch):
        nonlocal produced
        encoded = tokenizer(batch["text"])
        produced += sum(map(len, encoded["input_ids"]))
        return encoded

    started = time.perf_counter()
    raw = load_dataset(
        "text",
        data_files={"train": corpus_files(corpus)},
        streaming=True,
        keep_linebreaks=True,
    )["train"]
    blocks = raw.map(tokenize, batched=True, remove_columns=["text"]).map(group_texts, batched=True)
    first_block = None
    block_count = block_tokens = 0
    for block in blocks:
        if first_block is None:
            first_block = time.perf_counter() - started
        block_count += 1
        block_tokens += len(block["input_ids"])
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "tokens": produced,
        "first_block_seconds": first_block,
        "details": {"blocks": block_count, "block_tokens": block_tokens},
    }


def case_datasets_full(corpus: Path, tokenizer_json: str) -> dict:
    import pyarrow.compute as pc
    from datasets import load_dataset

    tokenizer = _hf_tokenizer(tokenizer_json)

    def tokenize(batch):
        return tokenizer(batch["text"])

    # A fresh Arrow cache on the same disk as the corpus: a reused cache would skip the maps.
    cache = tempfile.mkdtemp(prefix="datasets-cache-", dir=OUT)
    try:
        started = time.perf_counter()
        raw = load_dataset(
            "text",
            data_files={"train": corpus_files(corpus)},
            streaming=False,
            keep_linebreaks=True,
            cache_dir=cache,
        )["train"]
        tokenized = raw.map(tokenize, batched=True, remove_columns=["text"], num_proc=2)
        blocks = tokenized.map(group_texts, batched=True, num_proc=2)
        first_block = None
        block_count = block_tokens = 0
        for block in blocks:
            if first_block is None:
                first_block = time.perf_counter() - started
            block_count += 1
            block_tokens += len(block["input_ids"])
        seconds = time.perf_counter() - started
        # The maps ran in worker processes, so count what the tokenizer produced afterwards,
        # from the Arrow column, outside the timed region.
        produced = pc.sum(pc.list_value_length(tokenized.data.column("input_ids"))).as_py()
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "seconds": seconds,
        "tokens": produced,
        "first_block_seconds": first_block,
        "details": {"blocks": block_count, "block_tokens": block_tokens},
    }


def _lines_in_batches(corpus: Path) -> list[list[str]]:
    """Every line of the corpus with its "\\n" kept, in batches of about BATCH_BYTES of UTF-8."""
    batches, batch, size = [], [], 0
    for path in corpus_files(corpus):
        # Bytes, then decode: text mode would translate "\r" and change what gets encoded.
        parts = Path(path).read_bytes().decode("utf-8").split("\n")
        lines = [part + "\n" for part in parts[:-1]]
        if parts[-1]:
            lines.append(parts[-1])
        for line in lines:
            batch.append(line)
            size += len(line.encode("utf-8"))
            if size >= BATCH_BYTES:
                batches.append(batch)
                batch, size = [], 0
    if batch:
        batches.append(batch)
    return batches


def case_quicktok_raw(corpus: Path, tokenizer_json: str) -> dict:
    import quicktok

    encoding = quicktok.get_encoding("qwen3")
    batches = _lines_in_batches(corpus)
    threads = usable_cores()
    tokens = 0
    started = time.perf_counter()
    for batch in batches:
        ids, _offsets = encoding.encode_batch(batch, threads, False)
        tokens += len(ids)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "tokens": tokens,
        "details": {"threads": threads, "batches": len(batches)},
    }


def case_tokenizers_raw(corpus: Path, tokenizer_json: str) -> dict:
    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_json)
    batches = _lines_in_batches(corpus)
    tokens = 0
    started = time.perf_counter()
    for batch in batches:
        encodings = tokenizer.encode_batch(batch, add_special_tokens=False)
        # Converting to one flat array is part of the cost: a packer needs ids, not Encodings.
        count = sum(len(encoding.ids) for encoding in encodings)
        flat = np.fromiter(
            itertools.chain.from_iterable(encoding.ids for encoding in encodings),
            dtype=np.uint32,
            count=count,
        )
        tokens += len(flat)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens": tokens, "details": {"batches": len(batches)}}


def case_streampack_stream_first_block(corpus: Path, tokenizer_json: str) -> dict:
    started = time.perf_counter()
    import streampack

    imported = time.perf_counter()
    blocks = streampack.stream(str(corpus))
    loaded = time.perf_counter()
    iterator = iter(blocks)
    next(iterator)
    first_block = time.perf_counter() - loaded
    # Closing the abandoned iterator stops the reader and encoder threads; a hang here is a bug
    # that the parent's timeout reports.
    iterator.close()
    # No "seconds": a first block is not a throughput, and a ratio against it would mislead.
    return {
        "first_block_seconds": first_block,
        "details": {
            "import_seconds": round(imported - started, 3),
            "stream_call_seconds": round(loaded - imported, 3),
            "backend": blocks.pipeline.encoder.name,
        },
    }


def case_streampack_stream(corpus: Path, tokenizer_json: str) -> dict:
    import streampack

    load_started = time.perf_counter()
    blocks = streampack.stream(str(corpus), block_size=BLOCK_SIZE)
    started = time.perf_counter()
    first_block = None
    block_count = block_tokens = 0
    for block in blocks:
        if first_block is None:
            first_block = time.perf_counter() - started
        block_count += 1
        block_tokens += int(block["attention_mask"].sum())
    seconds = time.perf_counter() - started
    report = blocks.report
    return {
        "seconds": seconds,
        "tokens": report.get("tokens"),
        "first_block_seconds": first_block,
        "details": {
            "documents": report.get("documents"),
            "blocks": block_count,
            "block_tokens": block_tokens,
            "stream_call_seconds": round(started - load_started, 3),
            "backend": report.get("backend"),
            "workers": report.get("workers"),
        },
    }


def case_warmup(corpus: Path, tokenizer_json: str) -> dict:
    """Builds the built-in tokenizer.json once (cached), so no measured case pays for it."""
    from streampack.tokenize import load_tokenizer

    return {"tokenizer_json": load_tokenizer(None).path}


CHILD_CASES = {
    "warmup": case_warmup,
    "datasets-streaming": case_datasets_streaming,
    "datasets-full": case_datasets_full,
    "quicktok-raw": case_quicktok_raw,
    "tokenizers-raw": case_tokenizers_raw,
    "streampack-stream-first-block": case_streampack_stream_first_block,
    "streampack-stream": case_streampack_stream,
}


def run_child(case: str, corpus: Path, tokenizer_json: str, result_path: Path) -> None:
    result = CHILD_CASES[case](corpus, tokenizer_json)
    result_path.write_text(json.dumps(result), encoding="utf-8")


# --- measuring a process ---------------------------------------------------------------------


@dataclass
class Measured:
    returncode: int
    wall_seconds: float
    peak_rss_mb: float
    tree_rss_mb: float
    # CPU time other processes used while the case ran plus the hypervisor's steal, over the
    # core-seconds the machine had: above a few percent, the case was slowed by someone else.
    other_cpu_fraction: float
    steal_fraction: float  # the steal part alone: on a VM it is the host's other guests
    timed_out: bool
    stdout: Path
    stderr: Path


def child_env() -> dict:
    env = dict(os.environ)
    # Nothing may download at run time: every tokenizer and dataset builder is local.
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def run_measured(argv: list[str], name: str) -> Measured:
    """Run `argv`, recording wall clock, the kernel's peak RSS and a sampled process-tree RSS.

    The kernel figure (wait4's ru_maxrss) is exact but is the largest single process of the tree;
    the psutil figure sums every process of the tree (so it sees worker pools, and counts pages
    they share twice) but only every POLL_SECONDS.
    """
    import psutil

    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / f"{name}.out", logs / f"{name}.err"
    timed_out = False
    with stdout.open("wb") as out, stderr.open("wb") as err:
        machine_busy, steal, own_cpu = *_machine_busy_seconds(), _own_cpu_seconds()
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=child_env())
        root = psutil.Process(process.pid)
        tree_peak = 0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            tree_peak = max(tree_peak, _tree_rss(root))
            if not timed_out and time.perf_counter() - started > CASE_TIMEOUT_SECONDS:
                timed_out = True
                _kill_tree(root)
            time.sleep(POLL_SECONDS)
        wall = time.perf_counter() - started
        busy_now, steal_now = _machine_busy_seconds()
        machine_busy, steal = busy_now - machine_busy, steal_now - steal
        own_cpu = _own_cpu_seconds() - own_cpu
    # Popen did not reap the child itself; tell it, so it does not try to wait again.
    process.returncode = os.waitstatus_to_exitcode(status)
    other_cpu = max(0.0, machine_busy - own_cpu - usage.ru_utime - usage.ru_stime)
    capacity = wall * usable_cores()
    return Measured(
        returncode=process.returncode,
        wall_seconds=wall,
        peak_rss_mb=usage.ru_maxrss / 1024,  # Linux reports KiB
        tree_rss_mb=tree_peak / 2**20,
        other_cpu_fraction=other_cpu / capacity,
        steal_fraction=steal / capacity,
        timed_out=timed_out,
        stdout=stdout,
        stderr=stderr,
    )


def _machine_busy_seconds() -> tuple[float, float]:
    """CPU seconds the machine spent busy since boot, and the steal part of them."""
    import psutil

    times = psutil.cpu_times()
    # Steal counts as busy: on a VM it is CPU the hypervisor gave to someone else.
    busy = times.user + times.nice + times.system + times.irq + times.softirq + times.steal
    return busy, times.steal


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tree_rss(root) -> int:
    import psutil

    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for process in processes:
        # A process may exit between the listing and the read.
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


def _kill_tree(root) -> None:
    import psutil

    try:
        processes = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return "\n".join(text[-lines:])


# --- running cases ---------------------------------------------------------------------------


@dataclass
class CaseResult:
    name: str
    seconds: float | None = None  # the timed region (see README for each case's)
    wall_seconds: float | None = None  # the whole process, start-up included
    tokens: int | None = None
    first_block_seconds: float | None = None
    peak_rss_mb: float | None = None  # kernel, largest process of the case
    tree_rss_mb: float | None = None  # sampled, all processes of the case
    other_cpu_fraction: float | None = None
    steal_fraction: float | None = None
    details: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def peak_any_mb(self) -> float | None:
        values = [v for v in (self.peak_rss_mb, self.tree_rss_mb) if v is not None]
        return max(values) if values else None


def streampack_cli() -> str:
    beside = Path(sys.executable).with_name("streampack")
    found = str(beside) if beside.is_file() else shutil.which("streampack")
    if found is None:
        raise SystemExit(
            "the streampack command is not installed next to this Python nor on PATH; "
            f"install it with `{sys.executable} -m pip install -e {REPO}`"
        )
    return found


def run_case(name: str, corpus: Path, tokenizer_json: str) -> CaseResult:
    if name in PACK_CASES:
        return run_pack_case(name, corpus, PACK_CASES[name])
    result_path = OUT / "logs" / f"{name}.result.json"
    result_path.unlink(missing_ok=True)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", name]
    argv += ["--corpus", str(corpus), "--tokenizer-json", tokenizer_json]
    argv += ["--result", str(result_path)]
    measured = run_measured(argv, name)
    result = CaseResult(
        name,
        wall_seconds=measured.wall_seconds,
        peak_rss_mb=measured.peak_rss_mb,
        tree_rss_mb=measured.tree_rss_mb,
        other_cpu_fraction=measured.other_cpu_fraction,
        steal_fraction=measured.steal_fraction,
    )
    if not result_path.is_file():
        result.error = _failure(measured)
        return result
    values = json.loads(result_path.read_text(encoding="utf-8"))
    if measured.returncode != 0:
        values.setdefault("details", {})["exit_error"] = _failure(measured)
    for key in ("seconds", "tokens", "first_block_seconds", "details"):
        if key in values:
            setattr(result, key, values[key])
    return result


def run_pack_case(name: str, corpus: Path, backend: str) -> CaseResult:
    # On the disk of bench/out, not in /tmp, which may be RAM and would hide the writes.
    store_parent = Path(tempfile.mkdtemp(prefix="store-", dir=OUT))
    argv = [streampack_cli(), "pack", str(corpus), "-o", str(store_parent / "store")]
    argv += ["--quiet", "--json", "--overwrite"]
    if backend != "quicktok":
        argv += ["--backend", backend]
    try:
        measured = run_measured(argv, name)
    finally:
        shutil.rmtree(store_parent, ignore_errors=True)
    result = CaseResult(
        name,
        wall_seconds=measured.wall_seconds,
        peak_rss_mb=measured.peak_rss_mb,
        tree_rss_mb=measured.tree_rss_mb,
        other_cpu_fraction=measured.other_cpu_fraction,
        steal_fraction=measured.steal_fraction,
    )
    if measured.returncode != 0:
        result.error = _failure(measured)
        return result
    try:
        report = json.loads(measured.stdout.read_text(encoding="utf-8"))
    except ValueError as error:
        result.error = f"stdout of `streampack pack --json` is not JSON ({error})"
        return result
    result.seconds = report.get("seconds")
    result.tokens = report.get("tokens")
    result.first_block_seconds = report.get("first_block_seconds")
    keep = (
        "tokens_per_second",
        "peak_rss_mb",
        "tokenizer_load_seconds",
        "backend_setup_seconds",
        "backend",
        "workers",
        "documents",
        "blocks",
        "dropped_tokens",
        "total_seconds",
    )
    result.details = {key: report[key] for key in keep if key in report}
    if backend != "quicktok" and report.get("backend") != backend:
        result.details["warning"] = f"asked for backend {backend}, ran {report.get('backend')}"
    return result


def _failure(measured: Measured) -> str:
    if measured.timed_out:
        return f"killed after {CASE_TIMEOUT_SECONDS} s; stderr ({measured.stderr}):\n" + _tail(
            measured.stderr
        )
    return f"exit code {measured.returncode}; stderr ({measured.stderr}):\n{_tail(measured.stderr)}"


def warm_up(corpus: Path) -> str:
    """Load the tokenizer once in a child, and read the corpus once so the page cache is warm."""
    result_path = OUT / "logs" / "warmup.result.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", "warmup"]
    argv += ["--corpus", str(corpus), "--tokenizer-json", "", "--result", str(result_path)]
    measured = run_measured(argv, "warmup")
    if measured.returncode != 0:
        raise SystemExit(f"loading streampack's built-in tokenizer failed: {_failure(measured)}")
    for path in corpus_files(corpus):
        with open(path, "rb") as handle:
            while handle.read(16 << 20):
                pass
    return json.loads(result_path.read_text(encoding="utf-8"))["tokenizer_json"]


# --- corpus ----------------------------------------------------------------------------------


def ensure_corpus(corpus: Path, lines: int) -> dict:
    """Reuse `corpus` if a manifest says make_corpus.py wrote it with `lines`, else build it.

    The manifest sits beside the folder, not in it: everything inside is read as corpus.
    make_corpus.py is deterministic, so a rebuild with the same count gives the same files.
    """
    manifest_path = corpus.with_name(corpus.name + ".manifest.json")
    if manifest_path.is_file() and corpus.is_dir():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("lines") == lines and manifest.get("files") == _file_sizes(corpus):
            return manifest
    if corpus.is_dir():
        foreign = sorted(p.name for p in corpus.iterdir() if not CORPUS_PART.fullmatch(p.name))
        if foreign:
            raise SystemExit(
                f"{corpus}: holds files make_corpus.py did not write ({', '.join(foreign[:5])}); "
                f"the benchmark rebuilds this folder for --lines {lines}, so pass a new or "
                f"empty --corpus folder"
            )
        for stale in corpus.glob("part-*.txt"):
            stale.unlink()
    print(f"building the corpus: {lines} lines in {CORPUS_FILES} files at {corpus}", flush=True)
    argv = [sys.executable, str(MAKE_CORPUS), "pretrain", str(corpus)]
    argv += ["--lines", str(lines), "--files", str(CORPUS_FILES)]
    subprocess.run(argv, check=True)
    manifest = {"lines": lines, "files": _file_sizes(corpus)}
    manifest_path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def _file_sizes(corpus: Path) -> dict:
    return {Path(path).name: os.path.getsize(path) for path in corpus_files(corpus)}


# --- machine ---------------------------------------------------------------------------------


def machine_info() -> dict:
    import psutil

    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "nproc": usable_cores(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        # Other work on the machine skews every figure; a load near nproc means a noisy run.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "streampack_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}+uncommitted-src" if dirty else head


def print_machine(machine: dict) -> None:
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    print(
        f"machine: {machine['nproc']} usable cores ({machine['cpu_count']} online), "
        f"{machine['cpu_model']}, {machine['memory_gib']} GiB, {machine['platform']}, "
        f"load average {machine['load_average_1m']} at start"
    )
    print(f"python {machine['python']}; {packages}")
    print(f"streampack commit: {machine['streampack_commit']}")


# --- report ----------------------------------------------------------------------------------


def _fmt(value, spec: str) -> str:
    """`format(value, spec)`, or a dash as wide as `spec` asks when nothing was measured."""
    if value is None:
        width = re.match(r"\d*", spec).group()
        return "-".rjust(int(width or 1))
    return format(value, spec)


def _ratio(reference: CaseResult | None, case: CaseResult, wall: bool = False) -> float | None:
    """How many times faster than `reference` on the same files (time ratio, see README)."""
    seconds = case.wall_seconds if wall else case.seconds
    if reference is None or reference.seconds is None or not seconds:
        return None
    return reference.seconds / seconds


def print_table(results: list[CaseResult]) -> None:
    by_name = {result.name: result for result in results}
    reference, raw = by_name.get(REFERENCE), by_name.get(RAW)
    header = (
        f"{'case':<30} {'seconds':>8} {'wall s':>7} {'tokens':>11} {'Mtok/s':>7} "
        f"{'Mtok/s wall':>11} {'x datasets-str':>14} {'x quicktok-raw':>14} "
        f"{'peak RSS MB':>11} {'tree RSS MB':>11} {'1st block s':>11} {'other CPU':>9}"
    )
    print(header)
    print("-" * len(header))
    for case in results:
        if case.error:
            print(f"{case.name:<30} FAILED (see below)")
            continue
        per_second = case.tokens / case.seconds / 1e6 if case.tokens and case.seconds else None
        per_wall = case.tokens / case.wall_seconds / 1e6 if case.tokens else None
        print(
            f"{case.name:<30} {_fmt(case.seconds, '8.2f')} {_fmt(case.wall_seconds, '7.2f')} "
            f"{_fmt(case.tokens, '11,d')} {_fmt(per_second, '7.2f')} {_fmt(per_wall, '11.2f')} "
            f"{_fmt(_ratio(reference, case), '14.2f')} {_fmt(_ratio(raw, case), '14.2f')} "
            f"{_fmt(case.peak_rss_mb, '11.0f')} {_fmt(case.tree_rss_mb, '11.0f')} "
            f"{_fmt(case.first_block_seconds, '11.3f')} {_fmt(case.other_cpu_fraction, '9.0%')}"
        )
    warn_if_noisy(results)
    print()
    for case in results:
        if case.details:
            print(f"  {case.name}: {json.dumps(case.details)}")
        if case.error:
            print(f"  {case.name} FAILED: {case.error}")
    print_token_agreement(results, raw)


def warn_if_noisy(results: list[CaseResult]) -> None:
    noisy = [c.name for c in results if (c.other_cpu_fraction or 0) > NOISY_OTHER_CPU]
    if noisy:
        print(
            f"WARNING: other processes or the hypervisor (steal) took over {NOISY_OTHER_CPU:.0%} "
            f"of the CPU during {', '.join(noisy)}; their figures are slowed (steal per case is "
            f"in the --json file), rerun on a quiet machine"
        )


def print_token_agreement(results: list[CaseResult], raw: CaseResult | None) -> None:
    """Shows that every case encoded the same text: the time ratios are only fair if so.

    streampack adds one EOS per document and skips blank lines (one "\\n" token each), so its
    count minus its documents sits slightly below the raw count.
    """
    if raw is None or raw.error or raw.tokens is None:
        return
    parts = []
    for case in results:
        if case is raw or case.error or case.tokens is None:
            continue
        documents = case.details.get("documents") or 0
        text_tokens = case.tokens - documents
        label = f"{case.name} {text_tokens - raw.tokens:+,d}"
        parts.append(label + (f" (after {documents:,} EOS)" if documents else ""))
    print(f"\n  text tokens vs quicktok-raw ({raw.tokens:,}): " + "; ".join(parts))


@dataclass
class Check:
    target: str
    passed: bool | None  # None: a case it needs did not run or failed
    measured: str


def target_checks(results: list[CaseResult], lines: int) -> list[Check]:
    by_name = {r.name: r for r in results if not r.error}
    reference, raw = by_name.get(REFERENCE), by_name.get(RAW)
    pack, pack_tok = by_name.get("streampack-pack"), by_name.get("streampack-pack-tokenizers")
    checks = []

    def speed(label, case, baseline, minimum, wall):
        ratio = _ratio(baseline, case, wall) if case and baseline else None
        what = "wall clock, start-up included" if wall else "in-report seconds"
        measured = "-" if ratio is None else f"{ratio:.2f}x ({what})"
        checks.append(Check(label, None if ratio is None else ratio >= minimum, measured))

    for wall in (False, True):
        speed(
            f"streampack-pack >= {MIN_SPEEDUP_VS_DATASETS:g}x datasets-streaming",
            pack,
            reference,
            MIN_SPEEDUP_VS_DATASETS,
            wall,
        )
        speed(
            f"streampack-pack >= {MIN_FRACTION_OF_RAW:.0%} of quicktok-raw",
            pack,
            raw,
            MIN_FRACTION_OF_RAW,
            wall,
        )
        speed(
            f"streampack-pack-tokenizers >= {MIN_TOKENIZERS_SPEEDUP_VS_DATASETS:g}x "
            "datasets-streaming",
            pack_tok,
            reference,
            MIN_TOKENIZERS_SPEEDUP_VS_DATASETS,
            wall,
        )
    for name in ("streampack-pack", "streampack-pack-tokenizers", "streampack-stream"):
        case = by_name.get(name)
        peak = case.peak_any_mb if case else None
        checks.append(
            Check(
                f"{name} peak RSS <= {MAX_PEAK_RSS_MB:g} MB",
                None if peak is None else peak <= MAX_PEAK_RSS_MB,
                "-"
                if peak is None
                else f"{peak:.0f} MB (kernel {case.peak_rss_mb:.0f}, tree {case.tree_rss_mb:.0f})",
            )
        )
    for name in ("streampack-stream-first-block", "streampack-pack"):
        case = by_name.get(name)
        first = case.first_block_seconds if case else None
        checks.append(
            Check(
                f"{name} first block <= {MAX_FIRST_BLOCK_SECONDS:g} s",
                None if first is None else first <= MAX_FIRST_BLOCK_SECONDS,
                "-" if first is None else f"{first:.3f} s after the tokenizer is loaded",
            )
        )
    if lines == BIG_RUN_LINES and pack:
        for label, seconds in (("in-report", pack.seconds), ("wall clock", pack.wall_seconds)):
            checks.append(
                Check(
                    f"streampack-pack on {lines:,} lines <= {MAX_BIG_RUN_SECONDS:g} s",
                    seconds <= MAX_BIG_RUN_SECONDS,
                    f"{seconds:.1f} s ({label})",
                )
            )
    return checks


def print_checks(checks: list[Check]) -> None:
    print("\ntarget checks:")
    for check in checks:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[check.passed]
        print(f"  {verdict}  {check.target:<56} {check.measured}")


# --- modes -----------------------------------------------------------------------------------


def benchmark(args, machine: dict) -> dict:
    corpus = args.corpus or OUT / f"corpus-{args.lines}"
    manifest = ensure_corpus(corpus, args.lines)
    tokenizer_json = warm_up(corpus)
    megabytes = sum(manifest["files"].values()) / 1e6
    print(f"corpus: {corpus} ({args.lines:,} lines, {megabytes:.1f} MB); block size {BLOCK_SIZE}")
    print(f"tokenizer: {tokenizer_json}\n")
    # Cases are interleaved round by round, and each keeps its median run: this machine is shared,
    # and a neighbour's burst then costs one run of one case, not a whole case.
    runs: dict[str, list[CaseResult]] = {name: [] for name in args.only}
    for round_ in range(args.repeat):
        for name in args.only:
            print(f"running {name} ({round_ + 1}/{args.repeat}) ...", flush=True)
            runs[name].append(run_case(name, corpus, tokenizer_json))
    results = [median_run(runs[name]) for name in args.only]
    print()
    print_table(results)
    checks = target_checks(results, args.lines)
    print_checks(checks)
    return {
        "mode": "benchmark",
        "machine": machine,
        "corpus": {"path": str(corpus), "lines": args.lines, "megabytes": round(megabytes, 1)},
        "block_size": BLOCK_SIZE,
        "results": [asdict(r) for r in results],
        "checks": [asdict(c) for c in checks],
    }


def median_run(runs: list[CaseResult]) -> CaseResult:
    """The run with the median seconds (failed runs last); all runs' seconds go in its details."""
    ordered = sorted(runs, key=lambda r: (r.error is not None, r.seconds or r.wall_seconds))
    ok = [r for r in ordered if r.error is None]
    chosen = ok[(len(ok) - 1) // 2] if ok else ordered[0]
    if len(runs) > 1:
        chosen.details = dict(chosen.details or {})
        chosen.details["runs_seconds"] = [r.seconds for r in runs]
    return chosen


def scale(args, machine: dict) -> dict:
    results = []
    for lines in args.scale:
        corpus = OUT / f"corpus-{lines}"
        ensure_corpus(corpus, lines)
        warm_up(corpus)
        print(f"running streampack-pack on {lines:,} lines ...", flush=True)
        result = run_case("streampack-pack", corpus, "")
        results.append((lines, result))
    print(
        f"\n{'lines':>10} {'seconds':>8} {'wall s':>7} {'tokens':>12} {'peak RSS MB':>11} "
        f"{'tree RSS MB':>11} {'in-report RSS MB':>16} {'other CPU':>9}"
    )
    for lines, result in results:
        if result.error:
            print(f"{lines:>10,} FAILED: {result.error}")
            continue
        print(
            f"{lines:>10,} {_fmt(result.seconds, '8.2f')} {_fmt(result.wall_seconds, '7.2f')} "
            f"{_fmt(result.tokens, '12,d')} {_fmt(result.peak_rss_mb, '11.0f')} "
            f"{_fmt(result.tree_rss_mb, '11.0f')} "
            f"{_fmt(result.details.get('peak_rss_mb'), '16.0f')} "
            f"{_fmt(result.other_cpu_fraction, '9.0%')}"
        )
    warn_if_noisy([result for _, result in results])
    checks = []
    (small_lines, small), (big_lines, big) = results[0], results[-1]
    if not small.error and not big.error:
        ratio = big.peak_any_mb / small.peak_any_mb
        checks.append(
            Check(
                f"peak RSS {big_lines:,} / {small_lines:,} lines <= {MAX_SCALE_RSS_RATIO:.2f}",
                ratio <= MAX_SCALE_RSS_RATIO,
                f"{ratio:.3f} ({big.peak_any_mb:.0f} MB / {small.peak_any_mb:.0f} MB)",
            )
        )
    print_checks(checks)
    return {
        "mode": "scale",
        "machine": machine,
        "results": [{"lines": lines, **asdict(result)} for lines, result in results],
        "checks": [asdict(c) for c in checks],
    }


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown case {', '.join(unknown)}; the cases are {', '.join(CASES)}"
        )
    return names


def _line_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--scale takes line counts separated by commas, like 200000,2000000; got {text!r}"
        ) from None
    counts = sorted(set(counts))
    if len(counts) < 2 or counts[0] <= 0:
        raise argparse.ArgumentTypeError(
            f"--scale needs at least two positive line counts to compare, got {text!r}"
        )
    return counts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="corpus size in lines")
    parser.add_argument(
        "--corpus", type=Path, help="corpus folder (default: bench/out/corpus-LINES)"
    )
    parser.add_argument(
        "--only", type=_names, default=list(CASES), help=f"cases to run: {','.join(CASES)}"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per case, interleaved; the median is kept"
    )
    parser.add_argument(
        "--scale",
        type=_line_counts,
        help="run only streampack-pack on corpora of these line counts and compare peak RSS",
    )
    # The parent runs each case as `bench_pack.py --child NAME ...`.
    parser.add_argument("--child", choices=sorted(CHILD_CASES), help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer-json", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale and args.corpus:
        parser.error("--scale builds its own corpora in bench/out; drop --corpus")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.corpus, args.tokenizer_json, args.result)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print_machine(machine)
    output = scale(args, machine) if args.scale else benchmark(args, machine)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(output, indent=1), encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
