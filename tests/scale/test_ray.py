"""The Ray engine on a local instance (2 CPUs, loopback only, started once for the module)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import streampack
from streampack.cli import main
from streampack.scale.unit import FAIL_ONCE_ENV
from streampack.store import verify_store

ray = pytest.importorskip("ray")

SPLIT = 4096


@pytest.fixture(scope="module")
def local_ray():
    from streampack.scale.ray_engine import connect, disconnect

    if ray.is_initialized():
        ray.shutdown()
    _, owned = connect(None, 2)
    yield ray
    if owned:
        disconnect(ray)


@pytest.fixture(scope="module")
def local_split(corpus, tiny_tokenizer, tmp_path_factory):
    """The local engine's build of the same split, the reference for every Ray build."""
    path = tmp_path_factory.mktemp("local") / "store"
    report = streampack.pack(
        [corpus], path, tokenizer=str(tiny_tokenizer), block_size=64, split_bytes=SPLIT
    )
    return path, report


def test_local_instance_listens_on_loopback_only(local_ray):
    assert local_ray.util.get_node_ip_address() == "127.0.0.1"
    assert local_ray.cluster_resources()["CPU"] == 2


def test_ray_build_equals_the_local_build_of_the_split(
    local_ray, local_split, corpus, tiny_tokenizer, tmp_path, layout
):
    reference, expected = local_split
    report = streampack.pack(
        [corpus],
        tmp_path / "store",
        tokenizer=str(tiny_tokenizer),
        block_size=64,
        split_bytes=SPLIT,
        engine="ray",
    )
    assert report["engine"] == "ray" and report["retries"] == 0
    assert verify_store(tmp_path / "store") == []
    assert layout.store_files(tmp_path / "store") == layout.store_files(reference)
    for key in ("documents", "tokens", "blocks", "skipped", "repaired", "files"):
        assert report[key] == expected[key]
    # The attempt markers are gone; only the store's own files remain.
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted(
        p.name for p in reference.iterdir()
    )


def test_failed_tasks_are_retried_without_lost_or_doubled_blocks(
    local_ray, local_split, corpus, tiny_tokenizer, tmp_path, monkeypatch, layout
):
    reference, expected = local_split
    # Units 0, 7 and the last fail once, after their shards are already in the store; the
    # others have their marker already, as if they had failed before.
    markers = tmp_path / "markers"
    markers.mkdir()
    failing = {0, 7, expected["units"] - 1}
    for index in set(range(expected["units"])) - failing:
        (markers / f"u{index:05d}").touch()
    monkeypatch.setenv(FAIL_ONCE_ENV, str(markers))
    report = streampack.pack(
        [corpus],
        tmp_path / "store",
        tokenizer=str(tiny_tokenizer),
        block_size=64,
        split_bytes=SPLIT,
        engine="ray",
    )
    assert report["retries"] == len(failing)
    attempts = {entry["index"]: entry["attempts"] for entry in report["unit_reports"]}
    assert {index for index, count in attempts.items() if count == 2} == failing
    assert verify_store(tmp_path / "store") == []
    assert layout.store_files(tmp_path / "store") == layout.store_files(reference)
    assert np.array_equal(
        layout.unit_order_stream(tmp_path / "store"), layout.unit_order_stream(reference)
    )


def test_cli_engine_ray(local_ray, corpus, tiny_tokenizer, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "pack",
            str(corpus / "notes.txt"),
            "-o",
            str(tmp_path / "store"),
            "--tokenizer",
            str(tiny_tokenizer),
            "--block-size",
            "64",
            "--engine",
            "ray",
            "--split-mb",
            "0.01",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["engine"] == "ray" and report["units"] > 5
    assert verify_store(tmp_path / "store") == []
