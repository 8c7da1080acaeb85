"""Two encoding backends behind one interface: quicktok (exact where verified) and HF tokenizers.

Both turn a list of documents into one flat uint32 id array plus int64 offsets (document i is
`ids[offsets[i]:offsets[i + 1]]`), with special-token strings encoded as plain text and without
the tokenizer's own BOS/EOS framing, which the packer adds so that both backends agree.
"""

import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from ..errors import ConfigError
from ..records import RecordBatch
from .loader import LoadedTokenizer, cache_dir

log = logging.getLogger(__name__)

# Texts both backends must agree on before quicktok is trusted with a tokenizer. They cover the
# pre-tokenizer's corners (contractions, digit runs, whitespace runs, line ends, punctuation runs),
# NFC normalization, scripts the corpus uses, and special-token strings inside raw text.
VERIFY_TEXTS = (
    "Hello, world! It's a test; we'll see what they've done and I'd say you're right.",
    "   leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\r\nand\rcarriage returns\n\n\n  \n",
    "Numbers 1234567890 and 3.14159, 1e-9, 2026-12-03, ¥1,299.00, 40°C.",
    "患者男性，45岁，因反复发热3天入院。体温39.2℃，血常规示白细胞12.5×10^9/L。",
    "COVID-19患者的CT表现：双肺磨玻璃影（GGO），以外周分布为主。",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and half-width ｶﾀｶﾅ",
    "Combining marks: e\u0301 a\u0308 n\u0303, precomposed: é ä ñ, Hangul: 한국어 \u1100\u1161",
    "Emoji 😀🩺💊🫀 and flags 🇨🇳🇺🇸, ZWJ 👩‍⚕️",
    "Русский текст, العربية, हिन्दी, ไทย, עברית",
    "def f(x):\n    return x ** 2  # comment\n\tif x != 0: pass\n",
    "Separators that are not line ends: a\u2028b\u2029c\u0085d\x0ce\x0bf",
    "<|endoftext|> inside text, <|im_start|>user\nhi<|im_end|> and <|fim_prefix|>",
    "Repeated: " + "a" * 300 + " " + "哈" * 100 + " " + "!" * 50 + " " * 40 + "end",
    "MixedCASE 'S 'T 'RE 'VE 'M 'LL 'D shouldn't WON'T",
    "\u00a0nbsp\u3000ideographic space\u200bzero width",
    "",
)


class Encoder:
    """Encodes batches of documents; `map` keeps the input order whatever the number of workers."""

    name = "encoder"
    workers = 1

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def map(
        self, batches: Iterable[RecordBatch]
    ) -> Iterator[tuple[RecordBatch, np.ndarray, np.ndarray]]:
        for batch in batches:
            ids, offsets = self.encode_batch(batch.texts)
            yield batch, ids, offsets

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class QuicktokEncoder(Encoder):
    """quicktok's C++ `encode_batch`, which releases the GIL.

    `map` encodes whole batches on `workers` threads, one thread per batch, rather than splitting
    each batch over all threads: the reader thread shares these cores, and a batch split in equal
    halves waits for whichever half the reader slowed down, while independent batches do not wait
    for each other.
    """

    name = "quicktok"

    def __init__(self, encoding, threads: int) -> None:
        self._encoding = encoding
        self.workers = threads

    def encode_batch(self, texts):
        ids, offsets = self._encoding.encode_batch(texts, self.workers, False)
        return ids, offsets

    def _encode_one_thread(self, texts):
        return self._encoding.encode_batch(texts, 1, False)

    def map(self, batches):
        if self.workers == 1:
            yield from super().map(batches)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers, thread_name_prefix="quicktok") as pool:
            yield from _ordered(pool, self._encode_one_thread, batches, 2 * self.workers)


def _ordered(pool, encode, batches, window_size: int):
    """Submit batches to `pool`, at most `window_size` in flight; yield results in input order."""
    window: deque = deque()
    try:
        for batch in batches:
            window.append((batch, pool.submit(encode, batch.texts)))
            if len(window) >= window_size:
                done, future = window.popleft()
                yield done, *future.result()
        while window:
            done, future = window.popleft()
            yield done, *future.result()
    finally:
        for _, future in window:
            future.cancel()


# HF returns a full Encoding object per document (ids, token strings, offsets, masks). Encoding a
# whole 4 MB batch at once peaked at 419 MB here, 3,000 documents at a time at 390 MB, at the same
# speed; 1,024 at a time was 20% slower.
HF_SUB_BATCH = 3000


def _hf_encode(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    per_doc: list[list[int]] = []
    for start in range(0, len(texts), HF_SUB_BATCH):
        encodings = tokenizer.encode_batch(
            texts[start : start + HF_SUB_BATCH], add_special_tokens=False
        )
        per_doc += [encoding.ids for encoding in encodings]
    offsets = np.zeros(len(per_doc) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, per_doc), dtype=np.int64, count=len(per_doc)), out=offsets[1:])
    ids = np.fromiter(
        itertools.chain.from_iterable(per_doc), dtype=np.uint32, count=int(offsets[-1])
    )
    return ids, offsets


class TokenizersEncoder(Encoder):
    """Hugging Face `tokenizers` in this process: its Rust thread pool encodes, GIL released.

    Measured here on 2 cores, 200k lines: 1.26 M tokens/s, against 1.04 with one worker process
    per core (which also holds a copy of the tokenizer per process and needs the caller's script
    to guard its main code for `spawn`), and against 1.26 when a second batch is in flight to
    overlap the Python-side conversion (no gain, 200 MB more). The pool size is `workers`, set
    through RAYON_NUM_THREADS before the pool's first use in the process; if the variable is
    already set, or other code in the process encoded a batch first, that setting wins.
    """

    name = "tokenizers"

    def __init__(self, tokenizer: LoadedTokenizer, workers: int) -> None:
        self._tokenizer = tokenizer
        self.workers = workers
        os.environ.setdefault("RAYON_NUM_THREADS", str(workers))

    def encode_batch(self, texts):
        return _hf_encode(self._tokenizer.hf, texts)


def resolve_workers(workers: int) -> int:
    if workers:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _quicktok_encoding(tokenizer: LoadedTokenizer):
    """The quicktok encoding for this tokenizer, importing it into streampack's cache if needed."""
    import quicktok

    if tokenizer.quicktok_encoding:
        return quicktok.get_encoding(tokenizer.quicktok_encoding)
    name = "sp" + tokenizer.vocab_hash[:16]
    data_dir = cache_dir() / "quicktok"
    if not (data_dir / f"{name}.enc").is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        from quicktok.importer import import_tokenizer

        # The importer reports on stdout; keep stdout for results and log it instead.
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            import_tokenizer(tokenizer.path, name, str(data_dir))
        log.debug("quicktok import: %s", captured.getvalue().strip())
    return quicktok.Tokenizer(name, str(data_dir))


def _verify(tokenizer: LoadedTokenizer, encoder: QuicktokEncoder) -> str | None:
    """None when quicktok matches HF on every verification text, else what differed."""
    texts = [*VERIFY_TEXTS, *tokenizer.added_tokens, " ".join(tokenizer.added_tokens)]
    texts += _sample_texts()
    fast_ids, fast_offsets = encoder.encode_batch(texts)
    # One text at a time: `encode` does not start HF's thread pool, whose size is set later.
    reference = [tokenizer.hf.encode(text, add_special_tokens=False).ids for text in texts]
    ref_offsets = np.cumsum([0, *map(len, reference)], dtype=np.int64)
    ref_ids = np.fromiter(itertools.chain.from_iterable(reference), dtype=np.uint32)
    if np.array_equal(fast_offsets, ref_offsets) and np.array_equal(fast_ids, ref_ids):
        return None
    for index, text in enumerate(texts):
        fast = fast_ids[fast_offsets[index] : fast_offsets[index + 1]]
        ref = ref_ids[ref_offsets[index] : ref_offsets[index + 1]]
        if not np.array_equal(fast, ref):
            return f"ids differ on {text[:40]!r}"
    return "ids differ"


def _sample_texts() -> list[str]:
    from importlib.resources import files

    sample = files("streampack") / "data" / "demo.txt"
    return sample.read_text(encoding="utf-8").split("\n") if sample.is_file() else []


def _verdict_path(tokenizer: LoadedTokenizer) -> "os.PathLike":
    import quicktok

    key = json.dumps([tokenizer.vocab_hash, quicktok.__version__, VERIFY_TEXTS, _sample_texts()])
    return cache_dir() / "verified" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def quicktok_for(tokenizer: LoadedTokenizer, threads: int) -> tuple[QuicktokEncoder | None, str]:
    """quicktok for this tokenizer if it is verified exact, else None and the reason."""
    verdict = _verdict_path(tokenizer)
    if verdict.is_file():
        cached = json.loads(verdict.read_text())
        if cached["exact"]:
            return QuicktokEncoder(_quicktok_encoding(tokenizer), threads), "verified (cached)"
        return None, cached["reason"]
    try:
        encoder = QuicktokEncoder(_quicktok_encoding(tokenizer), threads)
        problem = _verify(tokenizer, encoder)
    except Exception as error:  # the importer refuses grammars it cannot reproduce exactly
        encoder, problem = None, f"quicktok cannot import it: {str(error).splitlines()[0]}"
    verdict.parent.mkdir(parents=True, exist_ok=True)
    verdict.write_text(json.dumps({"exact": problem is None, "reason": problem or "verified"}))
    if problem:
        return None, problem
    return encoder, "verified"


def make_encoder(tokenizer: LoadedTokenizer, backend: str = "auto", workers: int = 0) -> Encoder:
    """The encoder for `backend`; `auto` says in the log which one it chose and why."""
    workers = resolve_workers(workers)
    if backend == "tokenizers":
        return TokenizersEncoder(tokenizer, workers)
    encoder, why = quicktok_for(tokenizer, workers)
    if encoder is not None:
        log.info("backend: quicktok (%s exact for %s)", why, tokenizer.name)
        return encoder
    if backend == "quicktok":
        raise ConfigError(
            f"--backend quicktok: quicktok is not exact for tokenizer {tokenizer.name} ({why}); "
            f"use --backend tokenizers or auto"
        )
    log.info("backend: tokenizers (quicktok is not exact for %s: %s)", tokenizer.name, why)
    return TokenizersEncoder(tokenizer, workers)
