"""Tokenizer loading and the two backends: same ids, special tokens never injected from text."""

import numpy as np
import pytest

from streampack.errors import ConfigError, TokenizerError
from streampack.tokenize import (
    QuicktokEncoder,
    TokenizersEncoder,
    load_tokenizer,
    make_encoder,
)

EOS = 151643


def test_builtin_is_qwen25(qwen):
    assert qwen.name == "qwen2.5"
    assert qwen.eos_id == EOS
    assert qwen.token_to_id("<|im_start|>") == 151644
    assert qwen.token_to_id("<|file_sep|>") == 151664
    assert qwen.vocab_size == 151665
    assert (qwen.prefix, qwen.suffix) == ((), ())


def test_builtin_qwen_known_ids(qwen):
    # Ids of Qwen2.5's published tokenizer for this text.
    assert qwen.hf.encode("Hello world", add_special_tokens=False).ids == [9707, 1879]


def test_auto_picks_quicktok_for_builtin(qwen):
    encoder = make_encoder(qwen, "auto", workers=2)
    assert isinstance(encoder, QuicktokEncoder)
    assert encoder.workers == 2


@pytest.mark.parametrize("backend", ["quicktok", "tokenizers"])
def test_special_token_strings_are_plain_text(qwen, backend):
    encoder = make_encoder(qwen, backend, workers=1)
    ids, offsets = encoder.encode_batch(["a<|endoftext|>b<|im_start|>user\n<|im_end|>"])
    assert len(offsets) == 2
    assert not np.isin(ids, [EOS, 151644, 151645]).any()
    assert qwen.decode(ids) == "a<|endoftext|>b<|im_start|>user\n<|im_end|>"


def _corpus_lines(medicalgpt):
    lines = []
    for name in (
        "pretrain/fever.txt",
        "rag/medical_corpus.txt",
        "pretrain/en_article_tail500.txt",
        "pretrain/tianlongbabu.txt",
    ):
        text = (medicalgpt / name).read_text(encoding="utf-8")
        lines += [line + "\n" for line in text.split("\n") if line.strip()]
    return lines


def test_backends_give_identical_ids_on_real_corpus(qwen, medicalgpt):
    lines = _corpus_lines(medicalgpt)
    assert len(lines) > 3000
    fast_ids, fast_offsets = make_encoder(qwen, "quicktok", workers=2).encode_batch(lines)
    with TokenizersEncoder(qwen, workers=2) as slow:
        slow_ids, slow_offsets = slow.encode_batch(lines)
    assert np.array_equal(fast_offsets, slow_offsets)
    assert np.array_equal(fast_ids, slow_ids)


def test_decode_round_trips_real_text(qwen, medicalgpt):
    lines = _corpus_lines(medicalgpt)[:2000]
    ids, offsets = make_encoder(qwen, "quicktok", workers=1).encode_batch(lines)
    for index in range(0, len(lines), 97):
        assert qwen.decode(ids[offsets[index] : offsets[index + 1]]) == lines[index]


def test_tokenizers_pool_keeps_order_for_any_worker_count(qwen):
    from streampack.records import RecordBatch

    batches = [
        RecordBatch("x", [f"document {i} of batch {b}\n" for i in range(50)], np.arange(50), 0)
        for b in range(9)
    ]
    results = []
    for workers in (1, 3):
        with TokenizersEncoder(qwen, workers) as encoder:
            results.append([ids.tolist() for _, ids, _ in encoder.map(iter(batches))])
    assert results[0] == results[1]
    assert len(results[0]) == 9


def test_local_folder_with_bos_and_fallback_to_tokenizers(tiny_tokenizer):
    tiny = load_tokenizer(str(tiny_tokenizer))
    assert tiny.prefix == (tiny.token_to_id("<s>"),)
    assert tiny.eos_id == tiny.token_to_id("</s>")
    assert tiny.pad_id == tiny.token_to_id("<pad>")
    assert tiny.vocab_size <= 400
    encoder = make_encoder(tiny, "auto", workers=1)
    assert isinstance(encoder, TokenizersEncoder)
    with pytest.raises(ConfigError, match="quicktok is not exact for tokenizer"):
        make_encoder(tiny, "quicktok", workers=1)


def test_tokenizer_json_path(tiny_tokenizer):
    tiny = load_tokenizer(str(tiny_tokenizer / "tokenizer.json"))
    assert tiny.eos_id == tiny.token_to_id("</s>")


def test_missing_hub_id_says_it_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(TokenizerError, match="not in the local Hugging Face cache"):
        load_tokenizer("nobody/no-such-model")


def test_eos_must_exist(tiny_tokenizer):
    with pytest.raises(TokenizerError, match="pass --eos-token"):
        load_tokenizer(str(tiny_tokenizer), eos_token="<|nope|>")


def test_eos_must_be_a_special_token(tiny_tokenizer):
    with pytest.raises(TokenizerError, match="is an ordinary token of the vocabulary"):
        load_tokenizer(str(tiny_tokenizer), eos_token="fever")


def test_path_that_does_not_exist_is_not_looked_up_in_the_hub_cache(tmp_path):
    with pytest.raises(TokenizerError, match="no such tokenizer file or folder"):
        load_tokenizer(str(tmp_path / "missing" / "tokenizer.json"))


def test_folder_without_a_tokenizer(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer here"):
        load_tokenizer(str(tmp_path))
