"""The batch layout gives exactly the samples `encode_conversation` gives, one by one."""

import dataclasses
from pathlib import Path

import numpy as np
import orjson
import pytest

from streampack.report import Report
from streampack.sft import TEMPLATES, Conversation, Turn, encode_conversation, parse_records
from streampack.sft.layout import BatchLayout, PrefilledTokenizer
from streampack.sft.templates import Segment, Template

MEDICALGPT = Path(__file__).resolve().parents[2].parent / "shared/data/medicalgpt"

CONVERSATIONS = [
    Conversation(None, (Turn("user", "fever"), Turn("assistant", "cough"))),
    Conversation(
        "sys",
        (
            Turn("user", "q1"),
            Turn("assistant", "a1"),
            Turn("user", "q2"),
            Turn("function_call", '{"name": "f"}'),
            Turn("tool", "result"),
            Turn("assistant", "a2"),
        ),
        tools='[{"name": "f"}]',
    ),
    Conversation(None, (Turn("user", "fever"), Turn("assistant", "fever"))),
    Conversation("sys", (Turn("user", "q " * 40), Turn("assistant", "a " * 40))),
]


def _layout(template, tokenizer, max_length, last_turn_only):
    prefilled = dataclasses.replace(tokenizer, hf=PrefilledTokenizer(tokenizer.hf))
    return BatchLayout(template, prefilled, max_length, last_turn_only)


def _laid_out(layout, tokenizer, conversations):
    items = list(enumerate(conversations, 1))
    plan = layout.plan(items)
    encodings = tokenizer.hf.encode_batch(list(plan.texts), add_special_tokens=False)
    lengths = [len(encoding.ids) for encoding in encodings]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.array([i for encoding in encodings for i in encoding.ids], dtype=np.uint32)
    return layout.lay_out(plan, ids, offsets)


def _expect_same(layout, tokenizer, conversations, template, max_length, last_turn_only):
    samples, skipped, trained = _laid_out(layout, tokenizer, conversations)
    got = dict(samples)
    assert len(got) + len(skipped) == len(conversations)
    for line, conversation in enumerate(conversations, 1):
        want = encode_conversation(conversation, template, tokenizer, max_length, last_turn_only)
        if want is None:
            assert line in {skip[0] for skip in skipped}
            continue
        sample = got[line]
        assert sample.input_ids.tolist() == want.input_ids.tolist()
        assert sample.labels.tolist() == want.labels.tolist()
        assert sample.attention_mask.tolist() == want.attention_mask.tolist()
        assert sample.truncated_tokens == want.truncated_tokens
    assert trained == sum(int((s.labels != -100).sum()) for _, s in samples)


@pytest.mark.parametrize("last_turn_only", [False, True])
@pytest.mark.parametrize("max_length", [None, 12, 40])
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_matches_the_per_conversation_encoder(
    name, max_length, last_turn_only, marker_tokenizer
):
    layout = _layout(name, marker_tokenizer, max_length, last_turn_only)
    assert layout.compiled
    _expect_same(layout, marker_tokenizer, CONVERSATIONS, name, max_length, last_turn_only)


class Joined(Template):
    """Writes a turn's role, content and line break as one text: it cannot be compiled."""

    name = "joined"

    def system(self, text):
        return [Segment(f"{text}\n")]

    def turn(self, turn, previous, eos, system):
        answer = turn.role in ("assistant", "function_call")
        return [Segment(f"{turn.role}: {turn.content}\n", False, answer)]


def test_a_template_that_joins_content_takes_the_per_conversation_path(marker_tokenizer):
    template = Joined()
    layout = _layout(template, marker_tokenizer, None, False)
    _expect_same(layout, marker_tokenizer, CONVERSATIONS, template, None, False)
    assert not layout.compiled


@pytest.mark.parametrize("name", ["chatml", "alpaca"])
def test_real_sft_files_match_the_per_conversation_encoder(name, qwen):
    files = sorted((MEDICALGPT / "sft").glob("*.jsonl"))
    if not files:
        pytest.skip(f"the real MedicalGPT SFT sample is not at {MEDICALGPT / 'sft'}")
    conversations = []
    for path in files:
        numbered = [
            (line, orjson.loads(raw))
            for line, raw in enumerate(path.read_bytes().split(b"\n"), 1)
            if raw.strip()
        ]
        conversations += [item for _, item in parse_records(numbered, str(path), Report())]
    layout = _layout(name, qwen, 1024, False)
    _expect_same(layout, qwen, conversations, name, 1024, False)
