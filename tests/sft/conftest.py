"""A tiny byte-level tokenizer whose special tokens are the markers of every built-in template."""

import json

import pytest

MARKERS = [
    "</s>",
    "<s>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|im_start|>",
    "<|im_end|>",
]


@pytest.fixture(scope="session")
def marker_tokenizer(tmp_path_factory):
    """Loaded like any local tokenizer: EOS `</s>`, markers as special added tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from streampack.tokenize import load_tokenizer

    folder = tmp_path_factory.mktemp("marker-tokenizer")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=MARKERS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["USER: ASSISTANT: ### Instruction: ### Response: [INST] [/INST] fever cough"] * 20
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    return load_tokenizer(folder)
