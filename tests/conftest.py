"""Shared fixtures: an isolated cache, the real MedicalGPT sample when present, a tiny tokenizer."""

import json
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MEDICALGPT = SHARED / "data" / "medicalgpt"


def pytest_configure(config):
    # Tests never touch the user's cache; the built-in tokenizer is built once per test run.
    if "STREAMPACK_CACHE" not in os.environ:
        cache = Path(config.rootpath) / ".pytest_cache" / "streampack-cache"
        os.environ["STREAMPACK_CACHE"] = str(cache)


@pytest.fixture(scope="session")
def medicalgpt() -> Path:
    if not MEDICALGPT.is_dir():
        pytest.skip(f"the real MedicalGPT sample is not at {MEDICALGPT}")
    return MEDICALGPT


@pytest.fixture(scope="session")
def qwen():
    from streampack.tokenize import load_tokenizer

    return load_tokenizer(None)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """A byte-level BPE of a few hundred tokens that adds a BOS, trained here (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [
        "fever cough headache and sore throat",
        "the patient was given fluids and rest",
        "blood pressure and blood sugar were measured twice",
        "发热 咳嗽 头痛 高血压 糖尿病",
    ] * 20
    tokenizer.train_from_iterator(corpus, trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder
