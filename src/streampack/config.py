"""Settings as frozen dataclasses that check themselves; the CLI is built from these."""

import codecs
from dataclasses import dataclass

from .errors import ConfigError

DOC_MODES = ("line", "paragraph", "file")
FORMATS = ("text", "jsonl", "json", "parquet", "csv", "tsv")
REMAINDERS = ("drop", "pad")
POSITION_IDS = ("none", "reset")
BACKENDS = ("auto", "quicktok", "tokenizers")
ON_ERRORS = ("skip", "raise")
ENCODING_ERRORS = ("replace", "skip", "raise")
OVERSIZE = ("split", "skip")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, found {value!r}")


@dataclass(frozen=True)
class ReadConfig:
    """How sources are turned into documents.

    Attributes:
        doc_mode: for text files, one document per `line` (the line break kept), per `paragraph`
            (blank-line separated) or per `file`.
        text_field: the field holding the text in JSON, parquet and CSV records. None means
            `text`, or else the only string field of the record.
        format: read every file as this format instead of choosing by extension.
        batch_bytes: about this many bytes of text per read batch (a build journal counts them).
        batch_size: documents per batch handed to the tokenizer (a read batch is cut into such
            slices); None means auto: the text per batch is tuned on the run's first batches.
        on_error: `skip` counts a bad record in the report and goes on; `raise` stops at the first
            one with a `DataError` naming its file and line.
        encoding: the text encoding of every file (`latin-1`, `gb18030`, ...). Line breaks are
            found in the raw bytes, so only encodings where `\n` and `\r` are single ASCII bytes
            qualify (not UTF-16 or UTF-32).
        encoding_errors: bytes that are not valid in `encoding`: `replace` them with U+FFFD (the
            record is kept and counted), `skip` the record, or `raise`.
        max_document_bytes: documents longer than this (UTF-8 bytes) are split or skipped, as
            `oversize` says; None means no cap.
        oversize: `split` at line breaks, else sentence ends, else at the cap; or `skip`.
        collect_fields: record the fields of JSON records and their types per file (for
            `validate`); off by default since it costs a loop over every record's keys.
    """

    doc_mode: str = "line"
    text_field: str | None = None
    format: str | None = None
    batch_bytes: int = 4 << 20
    batch_size: int | None = None
    on_error: str = "skip"
    encoding: str = "utf-8"
    encoding_errors: str = "replace"
    max_document_bytes: int | None = None
    oversize: str = "split"
    collect_fields: bool = False

    def __post_init__(self) -> None:
        _check_choice("doc_mode", self.doc_mode, DOC_MODES)
        if self.format is not None:
            _check_choice("format", self.format, FORMATS)
        if self.batch_bytes < 1024:
            raise ConfigError(f"batch_bytes must be at least 1024, found {self.batch_bytes}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(
                f"batch_size must be 1 or more documents (or None for auto), found "
                f"{self.batch_size}"
            )
        _check_choice("on_error", self.on_error, ON_ERRORS)
        _check_choice("encoding_errors", self.encoding_errors, ENCODING_ERRORS)
        _check_choice("oversize", self.oversize, OVERSIZE)
        try:
            name = codecs.lookup(self.encoding).name
        except LookupError:
            raise ConfigError(
                f"encoding {self.encoding!r} is not known to Python; try utf-8, latin-1 or gb18030"
            ) from None
        # The readers cut blocks at raw b"\n" and b"\r", which must mean line breaks.
        if '\n\r{}[],"'.encode(name, "replace") != b'\n\r{}[],"':
            raise ConfigError(
                f"encoding {self.encoding!r} does not keep ASCII as single bytes, so lines "
                "cannot be found in its bytes; convert the files to UTF-8 first"
            )
        object.__setattr__(self, "encoding", name)
        if self.max_document_bytes is not None and self.max_document_bytes < 16:
            raise ConfigError(
                f"max_document_bytes must be at least 16 (or None for no cap), "
                f"found {self.max_document_bytes}"
            )


@dataclass(frozen=True)
class PackConfig:
    """How token streams become training samples.

    Attributes:
        block_size: tokens per block.
        packing: concatenate documents and cut blocks (True), or one document per sample (False),
            truncated or padded to `block_size`.
        remainder: what happens to the final partial block when packing: `drop` or `pad`.
        position_ids: `reset` restarts positions after every EOS (padding-free attention).
    """

    block_size: int = 1024
    packing: bool = True
    remainder: str = "drop"
    position_ids: str = "none"

    def __post_init__(self) -> None:
        if not 1 <= self.block_size <= 1 << 24:
            raise ConfigError(
                f"block_size must be between 1 and {1 << 24}, found {self.block_size}"
            )
        _check_choice("remainder", self.remainder, REMAINDERS)
        _check_choice("position_ids", self.position_ids, POSITION_IDS)


@dataclass(frozen=True)
class TokenizeConfig:
    """Which tokenizer and backend, and how many workers.

    Attributes:
        tokenizer: a local model folder, a `tokenizer.json`, a hub id in the local cache, or None
            for the built-in Qwen2.5 tokenizer.
        backend: `auto` picks quicktok where it is verified exact for this tokenizer.
        workers: encoding threads; 0 means all cores.
        eos_token: the end-of-document token, where the tokenizer's config names none or the
            wrong one for pretraining (an instruct model's `<|im_end|>`, say).
    """

    tokenizer: str | None = None
    eos_token: str | None = None
    backend: str = "auto"
    workers: int = 0

    def __post_init__(self) -> None:
        _check_choice("backend", self.backend, BACKENDS)
        if self.workers < 0:
            raise ConfigError(f"workers must be 0 (all cores) or more, found {self.workers}")
