"""`--config`: a run described in a TOML or YAML file, flags overriding it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ENTRY_POINT = Path(sys.executable).with_name("streampack")
STREAMPACK = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "streampack"]
DEMO = Path(__file__).resolve().parents[1] / "src/streampack/data/demo.txt"


def run(*args):
    return subprocess.run([*STREAMPACK, *map(str, args)], capture_output=True, text=True)


def _block_size(store: Path) -> int:
    return json.loads((store / "metadata.json").read_text())["block_size"]


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        f'sources = ["{DEMO}"]\n'
        "quiet = true\n"
        "[pack]\n"
        f'output = "{tmp_path / "store"}"\n'
        "block-size = 128\n"
        'remainder = "pad"\n'
        "[sft]\n"
        "max-length = 64\n"
    )
    return path


def test_pack_from_a_toml_recipe_and_flags_override_it(recipe, tmp_path):
    assert run("pack", "--config", recipe).returncode == 0
    assert _block_size(tmp_path / "store") == 128
    result = run("pack", "--config", recipe, "--block-size", "64", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert _block_size(tmp_path / "store") == 64


def test_a_yaml_recipe_and_sources_given_as_one_string(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"sources: {DEMO}\npack:\n  output: {tmp_path / 'y'}\n  block_size: 99\n")
    result = run("pack", "--config", path, "--quiet")
    assert result.returncode == 0, result.stderr
    assert _block_size(tmp_path / "y") == 99


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pack]\nblock-sise = 3\n", "'block-sise' is not a setting of `streampack pack`"),
        ("[pack\n", "not valid TOML"),
        ("[pack]\nblock-size = 0\n", "bad.toml: block-size"),
        ('[pack]\nblock-size = "big"\n', "bad.toml: block-size"),
    ],
)
def test_a_bad_recipe_is_a_usage_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run("pack", DEMO, "-o", tmp_path / "s", "--config", path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "--config" in run("pack", "--help").stdout


def test_like_repeats_a_build_from_its_store_alone(tmp_path):
    first = tmp_path / "first"
    args = ("--block-size", "100", "--remainder", "pad", "--position-ids", "reset", "--quiet")
    assert run("pack", DEMO, "-o", first, *args).returncode == 0
    result = run("pack", "--like", first, "-o", tmp_path / "again", "--quiet")
    assert result.returncode == 0, result.stderr
    for name in ("shard-00000.tokens", "shard-00000.doc_ends.npy", "token_counts.npy"):
        assert (first / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    before = json.loads((first / "metadata.json").read_text())
    after = json.loads((tmp_path / "again" / "metadata.json").read_text())
    assert {key for key in before if before[key] != after.get(key)} == {"created"}

    result = run("pack", "--like", first, "-o", tmp_path / "wider", "--block-size", "50", "-q")
    assert result.returncode == 0 and _block_size(tmp_path / "wider") == 50
    assert run("pack", "--like", tmp_path / "nothing", "-o", tmp_path / "x").returncode == 2
