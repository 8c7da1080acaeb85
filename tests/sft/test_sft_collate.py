"""Padding by position (pad == EOS keeps real EOS), and length-grouped batches."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from streampack.errors import ConfigError
from streampack.report import Report
from streampack.sft import (
    Sample,
    encode_conversation,
    length_grouped_batches,
    pad_batch,
    padding_ratio,
    parse_records,
)

MEDICALGPT = Path(__file__).resolve().parents[2].parent / "shared/data/medicalgpt"
EOS = 151643


def _sample(ids, labels=None):
    ids = np.asarray(ids, dtype=np.int64)
    labels = ids.copy() if labels is None else np.asarray(labels, dtype=np.int64)
    return Sample(ids, labels, np.ones_like(ids))


def test_pad_by_position_when_pad_is_eos():
    batch = pad_batch([_sample([5, 6, EOS]), _sample([EOS])], pad_id=EOS, multiple_of=4)
    assert batch["input_ids"].tolist() == [[5, 6, EOS, EOS], [EOS, EOS, EOS, EOS]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    # The real EOS of each sample keeps its label; only positions past the length are -100.
    assert batch["labels"].tolist() == [[5, 6, EOS, -100], [EOS, -100, -100, -100]]
    assert pad_batch([_sample([1, 2, 3])], pad_id=0)["input_ids"].shape == (1, 3)
    with pytest.raises(ConfigError):
        pad_batch([], pad_id=0)


def test_length_grouping_yields_every_sample_once_and_is_seeded():
    rng = random.Random(0)
    samples = [_sample([i] * rng.randint(1, 50)) for i in range(103)]
    batches = list(length_grouped_batches(iter(samples), batch_size=8, buffer_batches=3, seed=1))
    seen = sorted(int(s.input_ids[0]) for batch in batches for s in batch)
    assert seen == list(range(103))
    assert all(len(batch) == 8 for batch in batches[:-1]) or sum(map(len, batches)) == 103
    again = list(length_grouped_batches(iter(samples), batch_size=8, buffer_batches=3, seed=1))
    assert [[id(s) for s in b] for b in batches] == [[id(s) for s in b] for b in again]
    assert padding_ratio(batches) < padding_ratio([samples[i : i + 8] for i in range(0, 103, 8)])


def test_padding_ratio_counts_padding_over_padded_tokens():
    assert padding_ratio([[_sample([1, 2, 3, 4]), _sample([1, 2])]]) == 2 / 8
    assert padding_ratio([[_sample([1, 2, 3])]], multiple_of=8) == 5 / 8
    assert padding_ratio([]) == 0.0


def test_grouping_lowers_padding_on_the_real_sft_file(qwen):
    path = MEDICALGPT / "sft/medical_sft_1K_format.jsonl"
    if not path.is_file():
        pytest.skip(f"the real MedicalGPT sample is not at {path}")
    with path.open(encoding="utf-8") as handle:
        records = [(number, json.loads(line)) for number, line in enumerate(handle, 1)]
    report = Report()
    samples = [
        encode_conversation(
            conv, "chatml", qwen, max_length=1024, report=report, path=str(path), line=line
        )
        for line, conv in parse_records(records, str(path), report)
    ]
    samples = [s for s in samples if s is not None]
    assert len(samples) + report.skipped_total == 1000
    shuffled = samples[:]
    random.Random(0).shuffle(shuffled)
    random_batches = [shuffled[i : i + 8] for i in range(0, len(shuffled), 8)]
    grouped = list(length_grouped_batches(iter(samples), batch_size=8, buffer_batches=16, seed=0))
    assert sorted(map(id, (s for b in grouped for s in b))) == sorted(map(id, samples))
    ungrouped, with_groups = padding_ratio(random_batches), padding_ratio(grouped)
    print(f"padding ratio: random batches {ungrouped:.3f}, length-grouped {with_groups:.3f}")
    assert with_groups < ungrouped / 2
