"""Each built-in template's exact rendered text, label mask by character, and ids."""

import pytest

from streampack.errors import ConfigError
from streampack.sft import TEMPLATES, Conversation, Turn, encode_conversation, get_template

CONV = Conversation(
    "sys",
    (Turn("user", "q1"), Turn("assistant", "a1"), Turn("user", "q2"), Turn("assistant", "a2")),
)

# (template, rendered text, the trained characters in order) for CONV with eos "</s>".
EXPECTED = {
    "chatml": (
        "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n"
        "<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n"
        "<|im_start|>assistant\na2<|im_end|>\n",
        "a1<|im_end|>a2<|im_end|>",
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nsys<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nq1<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\na1<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nq2<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\na2<|eot_id|>",
        "a1<|eot_id|>a2<|eot_id|>",
    ),
    "mistral": ("<s>[INST] sys\n\nq1 [/INST]a1</s>[INST] q2 [/INST]a2</s>", "a1</s>a2</s>"),
    "vicuna": ("sys USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>", "a1</s>a2</s>"),
    "alpaca": (
        "sys\n\n### Instruction:\nq1\n\n### Response:\na1</s>\n\n"
        "### Instruction:\nq2\n\n### Response:\na2</s>",
        "a1</s>a2</s>",
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rendered_text_and_trained_characters(name):
    template = get_template(name)
    text, trained = EXPECTED[name]
    segments = template.render(CONV, eos_token="</s>")
    assert "".join(segment.text for segment in segments) == text
    assert "".join(segment.text for segment in segments if segment.trainable) == trained
    # Every trained marker is the one that closes an answer; every marker is a known special.
    for segment in segments:
        if segment.special:
            assert segment.text in (*template.markers, "</s>")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ids_round_trip_with_markers_as_single_special_ids(name, marker_tokenizer):
    """Decoding the ids gives the rendered text; decoding the trained ids gives the answers."""
    tokenizer = marker_tokenizer
    sample = encode_conversation(CONV, name, tokenizer)
    text, trained = EXPECTED[name]
    assert tokenizer.decode(sample.input_ids) == text
    assert tokenizer.decode(sample.input_ids[sample.labels != -100]) == trained
    for segment in get_template(name).render(CONV, eos_token="</s>"):
        if segment.special:
            assert tokenizer.token_to_id(segment.text) in sample.input_ids.tolist()
    assert sample.labels[-1] != -100 or name == "chatml"  # chatml ends with an untrained "\n"


def test_alpaca_default_system_and_eos_of_the_tokenizer(qwen):
    conv = Conversation(None, (Turn("user", "q"), Turn("assistant", "a")))
    text = get_template("alpaca").text(conv, eos_token="<|endoftext|>")
    assert text == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nq\n\n### Response:\na<|endoftext|>"
    )
    sample = encode_conversation(conv, "alpaca", qwen)
    assert sample.input_ids[-1] == qwen.eos_id == 151643 and sample.labels[-1] == 151643


def test_tool_turns_per_template():
    conv = Conversation(
        None,
        (
            Turn("user", "q"),
            Turn("function_call", "{call}"),
            Turn("tool", "{result}"),
            Turn("assistant", "a"),
        ),
        tools='[{"name": "f"}]',
    )
    chatml = get_template("chatml")
    assert chatml.text(conv) == (
        '<|im_start|>system\nAvailable tools (JSON):\n[{"name": "f"}]<|im_end|>\n'
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n{call}<|im_end|>\n"
        "<|im_start|>tool\n{result}<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"
    )
    trained = "".join(s.text for s in chatml.render(conv) if s.trainable)
    assert trained == "{call}<|im_end|>a<|im_end|>"
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n{result}" in get_template("llama3").text(
        conv
    )
    assert "USER: {result} ASSISTANT: a</s>" in get_template("vicuna").text(conv)


def test_qwen_is_chatml_and_unknown_template_is_a_config_error():
    assert get_template("qwen").text(CONV) == get_template("chatml").text(CONV)
    assert set(TEMPLATES) == {"chatml", "qwen", "llama3", "mistral", "vicuna", "alpaca"}
    with pytest.raises(ConfigError, match=r"template must be auto .* found 'chatml2'"):
        get_template("chatml2")
    with pytest.raises(ConfigError, match=r"auto_template\(tokenizer\)"):
        get_template("auto")


@pytest.mark.parametrize("name", ["llama3", "mistral", "vicuna"])
def test_marker_missing_from_the_vocabulary_is_a_config_error(name, qwen):
    with pytest.raises(ConfigError, match=rf"template '{name}' needs '.+' as a special token"):
        encode_conversation(CONV, name, qwen)
