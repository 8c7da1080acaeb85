"""`stats` on stores and sources, its plot, the HTML report (in headless Chromium), and help."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from streampack import pack, stream_sft
from streampack.cli import main
from streampack.sft.store import write_sft_store
from streampack.stats import source_stats, store_stats

ENTRY_POINT = Path(sys.executable).with_name("streampack")
STREAMPACK = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "streampack"]
TEXT = "".join(f"patient {i} has fever{' and cough' * (i % 7)}\n" for i in range(300)) + "\n\n"


def run(*args):
    return subprocess.run([*STREAMPACK, *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, qwen):
    folder = tmp_path_factory.mktemp("stats")
    (folder / "notes.txt").write_text(TEXT)
    pack(
        str(folder / "notes.txt"),
        str(folder / "store"),
        tokenizer=qwen,
        block_size=64,
        remainder="pad",
    )
    return folder


def test_source_and_store_stats_agree(corpus, qwen):
    from_source = source_stats(
        str(corpus / "notes.txt"), tokenizer=qwen, block_size=64, top=5, remainder="pad"
    )
    from_store = store_stats(corpus / "store", top=5)
    for key in ("documents", "tokens", "blocks", "distinct_tokens"):
        assert from_source[key] == from_store[key], key
    assert [row["id"] for row in from_source["top"]] == [row["id"] for row in from_store["top"]]
    lengths = from_store["document_length"]
    assert sum(lengths["histogram"]["counts"]) == lengths["count"] == 300
    assert lengths["p1"] <= lengths["p50"] <= lengths["max"]
    assert from_store["skipped"]["empty_document"]["count"] == 2
    assert 0 < from_store["block_fill"]["mean"] <= 1


def test_cli_stats_on_sources_with_a_plot(corpus):
    pytest.importorskip("matplotlib")
    plot = corpus / "stats.png"
    result = run("stats", corpus / "notes.txt", "--block-size", "64", "--plot", plot)
    assert result.returncode == 0, result.stderr
    assert "doc length" in result.stdout and "block fill" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    as_json = json.loads(run("stats", corpus / "store", "--json", "--top", "3").stdout)
    assert len(as_json["top"]) == 3 and as_json["document_length"]["count"] == 300
    assert run("stats", corpus / "missing.txt").returncode == 1


def test_cli_stats_of_an_sft_store(tmp_path, qwen):
    data = tmp_path / "chat.jsonl"
    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    data.write_text(json.dumps({"conversations": turns}) + "\n{bad\n")
    write_sft_store(stream_sft(str(data), qwen), tmp_path / "sft")
    result = run("stats", tmp_path / "sft")
    assert result.returncode == 0, result.stderr
    assert "samples        1 of 2 records" in result.stdout
    assert "invalid_json" in result.stdout
    pytest.importorskip("matplotlib")
    result = run("stats", tmp_path / "sft", "--plot", tmp_path / "sft.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sft.png").read_bytes()[:4] == b"\x89PNG"
    result = run("report", tmp_path / "sft", "-o", tmp_path / "sft.html")
    assert result.returncode == 0, result.stderr
    assert "sample 0" in (tmp_path / "sft.html").read_text()


def test_one_line_errors_for_an_empty_source_and_a_missing_folder(corpus, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    result = run("stats", empty)
    assert result.returncode == 1 and "no documents" in result.stderr
    result = run("report", corpus / "store", "-o", tmp_path / "no" / "such" / "page.html")
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_html_report_is_self_contained(corpus):
    pytest.importorskip("matplotlib")
    page = corpus / "report.html"
    result = run("report", corpus / "store", "-o", page)
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert "data:image/png;base64," in text and "http" not in text.split("<body>", 1)[1]
    assert "Most frequent tokens" in text and "block 0" in text


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium installed")
def test_html_report_opens_in_headless_chromium_with_its_figures(corpus):
    pytest.importorskip("matplotlib")
    page = corpus / "browser.html"
    assert run("report", corpus / "store", "-o", page).returncode == 0
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
    done = subprocess.run(
        [*command, page.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'data-figures="1 loaded of 1"' in done.stdout


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    for name in main.commands:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example" in result.output and f"streampack {name}" in result.output, name
