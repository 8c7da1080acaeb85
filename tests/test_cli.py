"""The command line, through the installed `streampack` entry point."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

# The console script installed beside this interpreter, as a user would run it.
ENTRY_POINT = Path(sys.executable).with_name("streampack")
STREAMPACK = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "streampack"]


def run(*args, check=None):
    result = subprocess.run(
        [*STREAMPACK, *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if check is not None:
        assert result.returncode == check, result.stderr
    return result


def test_demo_prints_summary_and_first_block():
    result = run("demo", check=0)
    assert "documents      40" in result.stdout
    assert "backend        quicktok" in result.stdout
    assert "高血压是最常见的慢性病之一" in result.stdout
    assert "<|endoftext|>" in result.stdout


def test_pack_then_verify(tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text("".join(f"note {i}: mild fever, no cough\n" for i in range(200)))
    result = run("pack", source, "-o", tmp_path / "store", "--block-size", "64", "--json", check=0)
    report = json.loads(result.stdout)
    assert report["documents"] == 200
    assert report["tokens"] == report["blocks"] * 64 + report["dropped_tokens"]
    for key in (
        "documents",
        "tokens",
        "blocks",
        "block_size",
        "dropped_tokens",
        "padded_tokens",
        "skipped",
        "files",
        "seconds",
        "tokens_per_second",
        "peak_rss_mb",
        "backend",
    ):
        assert key in report
    on_disk = json.loads((tmp_path / "store" / "report.json").read_text())
    assert on_disk["tokens"] == report["tokens"]
    assert run("verify", tmp_path / "store", check=0).stdout.strip().endswith(": ok")


def test_missing_source_is_one_line_and_exit_1(tmp_path):
    result = run("pack", tmp_path / "nothing.txt", "-o", tmp_path / "store", check=1)
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "nothing.txt" in result.stderr


def test_usage_error_exit_2(tmp_path):
    result = run("pack", tmp_path, "-o", tmp_path / "s", "--block-size", "0", check=2)
    assert "block-size" in result.stderr


def test_verify_incomplete_store_exit_1(tmp_path):
    (tmp_path / "store").mkdir()
    result = run("verify", tmp_path / "store", check=1)
    assert "not a complete token store" in result.stderr


@pytest.mark.parametrize("command", ["pack", "verify", "demo"])
def test_help_has_an_example(command):
    result = run(command, "--help", check=0)
    assert "Example" in result.stdout
    assert f"streampack {command}" in result.stdout


def test_strict_cannot_go_with_a_softer_on_error(tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text("fever\n")
    result = run("pack", source, "-o", tmp_path / "s", "--strict", "--on-error", "skip")
    assert result.returncode == 2 and "--strict means --on-error raise" in result.stderr
    assert run("pack", source, "-o", tmp_path / "s", "--strict", "-q").returncode == 0


def test_a_run_whose_files_were_all_passed_over_says_so(tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text("fever\n")
    result = run("sft", source, "-o", tmp_path / "sft")
    assert result.returncode == 1
    assert f"no file could be read: skipped {source} (not_json)" in result.stderr
