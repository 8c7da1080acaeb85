"""Split builds on the local engine, node parts and their merge: every document exactly once,
real line numbers in the report, and the same store for any split of the work."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import streampack
from streampack.cli import main
from streampack.errors import DataError, StoreError
from streampack.scale import merge_parts
from streampack.store import TokenStore, verify_store

SPLIT = 4096


def _pack(corpus, output, tokenizer, **options):
    options.setdefault("block_size", 64)
    return streampack.pack([corpus], output, tokenizer=tokenizer, **options)


@pytest.fixture(scope="module")
def builds(corpus, tiny_tokenizer, tmp_path_factory):
    """The plain local build and the split build of the corpus, remainder padded."""
    folder = tmp_path_factory.mktemp("builds")
    tok = str(tiny_tokenizer)
    plain = _pack(corpus, folder / "plain", tok, remainder="pad")
    split = _pack(corpus, folder / "split", tok, remainder="pad", split_bytes=SPLIT)
    return folder, plain, split


def test_split_store_holds_every_document_once_in_source_order(builds, layout):
    folder, plain, split = builds
    assert verify_store(folder / "split") == []
    assert split["units"] == split["units_total"] > 20
    # The units' blocks and leftovers, read in unit order, are the plain build's token stream:
    # every document, exactly once, in the order of the sources.
    assert np.array_equal(
        layout.unit_order_stream(folder / "split"), layout.stream_of(folder / "plain")
    )
    for key in ("documents", "tokens", "truncated_tokens"):
        assert split[key] == plain[key]
    # At most one block is padded, as in a plain build.
    assert split["padded_tokens"] < split["block_size"]


def test_split_report_names_real_lines_of_the_files(builds, corpus):
    _, plain, split = builds
    assert split["skipped"] == plain["skipped"]
    assert split["repaired"] == plain["repaired"]
    assert split["files"] == plain["files"]
    # Line 401 holds the bad byte; the unit that read it starts far into the file.
    offset = (corpus / "notes.txt").read_bytes().index(b"\xff")
    where = split["repaired"]["invalid_utf8"]["first"][0]
    assert where.endswith(f"notes.txt:401: byte offset {offset}")
    assert any(":4:" in where for where in split["skipped"]["invalid_json"]["first"])


def test_drop_keeps_all_but_the_last_partial_block(corpus, tiny_tokenizer, tmp_path, builds):
    _folder, _, split = builds
    report = _pack(corpus, tmp_path / "drop", str(tiny_tokenizer), split_bytes=SPLIT)
    assert report["dropped_tokens"] == report["block_size"] - split["padded_tokens"]
    assert report["blocks"] == split["blocks"] - 1
    assert verify_store(tmp_path / "drop") == []


def test_no_packing_split_equals_plain(corpus, tiny_tokenizer, tmp_path, layout):
    tok = str(tiny_tokenizer)
    _pack(corpus, tmp_path / "plain", tok, packing=False)
    _pack(corpus, tmp_path / "split", tok, packing=False, split_bytes=SPLIT)
    assert np.array_equal(
        layout.stream_of(tmp_path / "split"), layout.stream_of(tmp_path / "plain")
    )
    assert verify_store(tmp_path / "split") == []


def test_a_bad_record_under_raise_names_its_real_line(corpus, tiny_tokenizer, tmp_path):
    source = corpus / "records.jsonl"
    tok = str(tiny_tokenizer)
    with pytest.raises(DataError) as plain:
        _pack(source, tmp_path / "a", tok, on_error="raise")
    with pytest.raises(DataError) as split:
        _pack(source, tmp_path / "b", tok, on_error="raise", split_bytes=SPLIT)
    assert str(split.value) == str(plain.value)
    assert not (tmp_path / "b").exists()


def test_node_parts_merge_into_the_single_machine_store(
    corpus, tiny_tokenizer, tmp_path, builds, layout
):
    folder, _, split = builds
    tok = str(tiny_tokenizer)
    parts = []
    for rank in range(3):
        part = tmp_path / f"part-{rank}"
        report = _pack(
            corpus, part, tok, remainder="pad", split_bytes=SPLIT, num_nodes=3, node_rank=rank
        )
        assert report["units"] == len(range(rank, split["units_total"], 3))
        assert verify_store(part) == []
        parts.append(part)
    merged = tmp_path / "merged"
    report = merge_parts(reversed(parts), merged)
    assert verify_store(merged) == []
    assert layout.store_files(merged) == layout.store_files(folder / "split")
    for key in ("documents", "tokens", "blocks", "skipped", "repaired", "files"):
        assert report[key] == split[key]
    assert np.array_equal(layout.unit_order_stream(merged), layout.stream_of(folder / "plain"))
    # The tokens were linked, not copied.
    name = TokenStore(merged).metadata["units"][0]["shards"][0]
    assert (merged / f"{name}.tokens").stat().st_ino == (parts[0] / f"{name}.tokens").stat().st_ino


def test_merge_refuses_parts_that_do_not_fit(corpus, tiny_tokenizer, tmp_path, builds):
    folder, _, _ = builds
    tok = str(tiny_tokenizer)
    common = {"split_bytes": SPLIT, "num_nodes": 2}
    _pack(corpus, tmp_path / "p0", tok, node_rank=0, **common)
    _pack(corpus, tmp_path / "p1", tok, node_rank=1, **common)
    _pack(corpus, tmp_path / "q1", tok, node_rank=1, block_size=32, **common)
    with pytest.raises(StoreError, match="missing node ranks 1"):
        merge_parts([tmp_path / "p0"], tmp_path / "m")
    with pytest.raises(StoreError, match="block_size differs"):
        merge_parts([tmp_path / "p0", tmp_path / "q1"], tmp_path / "m")
    with pytest.raises(StoreError, match="not a store part"):
        merge_parts([folder / "split"], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    merge_parts([tmp_path / "p1", tmp_path / "p0"], tmp_path / "m")
    assert verify_store(tmp_path / "m") == []


def test_cli_node_ranks_and_merge(corpus, tiny_tokenizer, tmp_path):
    runner = CliRunner()
    base = ["pack", str(corpus), "--tokenizer", str(tiny_tokenizer), "--block-size", "64"]
    base += ["--split-mb", "0.01", "--num-nodes", "2", "-q"]
    for rank in (0, 1):
        result = runner.invoke(
            main, [*base, "-o", str(tmp_path / f"p{rank}"), "--node-rank", str(rank)]
        )
        assert result.exit_code == 0, result.output
    bad = runner.invoke(main, [*base, "-o", str(tmp_path / "p2"), "--node-rank", "2"])
    assert bad.exit_code == 2 and "--node-rank must be below --num-nodes" in bad.output
    result = runner.invoke(
        main,
        ["merge", str(tmp_path / "p0"), str(tmp_path / "p1"), "-o", str(tmp_path / "m"), "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["engine"] == "merge" and report["units"] == report["units_total"]
    result = runner.invoke(main, ["merge", str(tmp_path / "p0"), "-o", str(tmp_path / "n")])
    assert result.exit_code == 1 and "missing node ranks 1" in result.output
