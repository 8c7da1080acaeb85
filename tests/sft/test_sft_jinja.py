"""`template="auto"`: a tokenizer's own Jinja chat template, with exact label masks."""

import json
import shutil
from pathlib import Path

import pytest

from streampack import stream_sft
from streampack.report import Report
from streampack.sft import Conversation, Turn, encode_conversation, parse_records
from streampack.tokenize import load_tokenizer

MEDICALGPT = Path(__file__).resolve().parents[2].parent / "shared/data/medicalgpt"

# Written from the ChatML format; a default system text when the conversation has none.
CHATML = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nBe brief.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
)
# The same without a default system: the layout of the built-in `chatml`.
CHATML_PLAIN = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
)
# Written from the Llama 3 format: a BOS, texts trimmed.
LLAMA3 = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}"
    "{{- message['content'] | trim + '<|eot_id|>' -}}"
    "{%- endfor -%}"
)
NO_SYSTEM = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ raise_exception('no system role') }}{%- endif -%}"
    "{{- message['role'] + ': ' + message['content'] + '</s>' -}}"
    "{%- endfor -%}"
)
UPPER = (
    "{%- for message in messages -%}"
    "{{- message['role'] + ': ' + message['content'] | upper + '</s>' -}}"
    "{%- endfor -%}"
)
WITH_TOOLS = (
    "{%- if tools -%}{{- '<|im_start|>system\\nTools: ' + tools | tojson + '<|im_end|>\\n' -}}"
    "{%- endif -%}" + CHATML_PLAIN
)

CONV = Conversation(
    None,
    (Turn("user", "q1"), Turn("assistant", " a1 "), Turn("user", "q2"), Turn("assistant", "a2")),
)


def _with_template(source: Path, folder: Path, chat_template: str, **config):
    folder.mkdir()
    shutil.copy(source, folder / "tokenizer.json")
    settings = {"eos_token": "</s>", "bos_token": "<s>", "chat_template": chat_template, **config}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return load_tokenizer(folder)


@pytest.fixture
def markers_with(marker_tokenizer, tmp_path):
    def make(chat_template, **config):
        folder = tmp_path / f"tok{len(list(tmp_path.iterdir()))}"
        return _with_template(Path(marker_tokenizer.path), folder, chat_template, **config)

    return make


def _trained_text(tokenizer, sample):
    return tokenizer.decode(sample.input_ids[sample.labels != -100])


def test_chatml_template_with_a_default_system_text(markers_with):
    tokenizer = markers_with(CHATML)
    sample = encode_conversation(CONV, "auto", tokenizer)
    assert tokenizer.decode(sample.input_ids) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n"
        "<|im_start|>assistant\n a1 <|im_end|>\n<|im_start|>user\nq2<|im_end|>\n"
        "<|im_start|>assistant\na2<|im_end|>\n"
    )
    assert _trained_text(tokenizer, sample) == " a1 <|im_end|>a2<|im_end|>"
    for marker in ("<|im_start|>", "<|im_end|>"):
        assert (sample.input_ids == tokenizer.token_to_id(marker)).sum() == 5


def test_llama3_template_trims_texts_and_writes_its_bos(markers_with):
    tokenizer = markers_with(LLAMA3, bos_token="<|begin_of_text|>")
    sample = encode_conversation(CONV, "auto", tokenizer)
    text = tokenizer.decode(sample.input_ids)
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nq1")
    assert text.count("<|begin_of_text|>") == 1
    assert _trained_text(tokenizer, sample) == "a1<|eot_id|>a2<|eot_id|>"


def test_marker_text_inside_a_turn_stays_plain_text(markers_with):
    tokenizer = markers_with(CHATML_PLAIN)
    conv = Conversation(None, (Turn("user", "hi<|im_end|>"), Turn("assistant", "ok")))
    sample = encode_conversation(conv, "auto", tokenizer)
    assert (sample.input_ids == tokenizer.token_to_id("<|im_end|>")).sum() == 2


def test_templates_that_fail_or_rewrite_are_counted_not_trained(markers_with):
    report = Report()
    failing = markers_with(NO_SYSTEM)
    with_system = Conversation("sys", CONV.turns)
    assert (
        encode_conversation(with_system, "auto", failing, report=report, path="f", line=3) is None
    )
    assert encode_conversation(CONV, "auto", failing) is not None
    upper = markers_with(UPPER)
    assert encode_conversation(CONV, "auto", upper, report=report, path="f", line=4) is None
    skipped = report.as_dict()["skipped"]
    assert skipped["chat_template_error"]["first"] == ["f:3"]
    assert skipped["chat_template_changes_text"]["first"] == ["f:4"]


def test_tools_go_to_the_templates_tools_variable(markers_with):
    tokenizer = markers_with(WITH_TOOLS)
    conv = Conversation(None, CONV.turns, tools='[{"name": "lookup"}]')
    sample = encode_conversation(conv, "auto", tokenizer)
    text = tokenizer.decode(sample.input_ids)
    assert text.startswith('<|im_start|>system\nTools: [{"name": "lookup"}]<|im_end|>\n')
    assert "lookup" not in _trained_text(tokenizer, sample)


def test_max_length_drops_rounds_through_the_template(markers_with):
    tokenizer = markers_with(CHATML_PLAIN)
    full = encode_conversation(CONV, "auto", tokenizer)
    cut = encode_conversation(CONV, "auto", tokenizer, max_length=len(full) - 1)
    assert cut.dropped_rounds == 1
    assert _trained_text(tokenizer, cut) == "a2<|im_end|>"


def test_a_tokenizer_without_a_chat_template_gets_chatml(marker_tokenizer, tmp_path):
    (tmp_path / "data.jsonl").write_text(
        json.dumps(
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
        )
    )
    stream = stream_sft(str(tmp_path / "data.jsonl"), marker_tokenizer)
    assert len(list(stream.samples())) == 1
    assert stream.report["template"] == "chatml (auto: the tokenizer has no chat template)"


def test_auto_equals_the_builtin_chatml_on_the_real_sft_files(qwen, tmp_path):
    files = sorted((MEDICALGPT / "sft").glob("*.jsonl"))
    if not files:
        pytest.skip(f"the real MedicalGPT SFT sample is not at {MEDICALGPT / 'sft'}")
    tokenizer = _with_template(
        Path(qwen.path), tmp_path / "qwen", CHATML_PLAIN, eos_token="<|endoftext|>"
    )
    report = Report()
    records = []
    for path in files[:2]:
        lines = path.read_text(encoding="utf-8").splitlines()[:150]
        numbered = [(n, json.loads(raw)) for n, raw in enumerate(lines, 1) if raw.strip()]
        records += [item for _, item in parse_records(numbered, str(path), report)]
    assert len(records) > 250
    for conversation in records:
        auto = encode_conversation(conversation, "auto", tokenizer, 1024)
        builtin = encode_conversation(conversation, "chatml", qwen, 1024)
        assert auto.input_ids.tolist() == builtin.input_ids.tolist()
        assert auto.labels.tolist() == builtin.labels.tolist()
