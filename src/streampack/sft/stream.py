"""`stream_sft`: chat files → conversations → samples → padded batches, in bounded memory.

```
files ──► (line, object) ──► Conversation ──► piece refs ──► Sample ──► grouped ──► padded
(json_objects.py)            (formats.py)     (layout.py)    (layout.py) (collate.py)  int64
```

Records are read 1,024 at a time. The distinct content texts of those records are encoded in
one call to the backend `make_encoder` picks (quicktok, on all cores, where it is verified
exact; else Hugging Face `tokenizers`), and `layout.BatchLayout` builds every sample of the
batch from those ids with numpy; conversations longer than `max_length` go through
`encode.encode_conversation`, which drops rounds and cuts the prompt. Memory holds a few read
batches and the grouping buffer (`buffer_batches * batch_size` samples).
"""

import dataclasses
import logging
import time
from collections.abc import Iterator

from ..config import ON_ERRORS
from ..engine import peak_rss_mb, threaded
from ..errors import ConfigError, DataError
from ..report import Report, nothing_used
from ..sources.discovery import discover, source_names
from ..sources.json_objects import read_json_objects
from ..tokenize import LoadedTokenizer, load_tokenizer, make_encoder
from .collate import length_grouped_batches, pack_samples, packed_batch, pad_batch
from .encode import NO_ANSWER_TOKEN, Sample, check_template, encode_preference
from .formats import RECORD_FORMATS, PreferencePair, parse_records
from .jinja import AUTO, TemplateRejected
from .layout import BatchLayout, Plan, PrefilledTokenizer
from .templates import system_text

log = logging.getLogger(__name__)

# Read batches encoded ahead of the one being laid out: one keeps both cores busy.
READ_AHEAD = 2


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """How conversations become samples and batches; checked on construction.

    Attributes:
        template: `auto` (the tokenizer's own chat template) or a name of `sft.TEMPLATES`.
        max_length: the longest sample, in tokens (None: no cap).
        last_turn_only: train only the last answer of each conversation.
        preference: read preference pairs and yield prompt/chosen/rejected ids, unpadded.
        group_by_length: batches of similar lengths from a shuffled buffer; else in file order.
        record_format: read every record as this one of `formats.RECORD_FORMATS` (others
            are rejected as `unrecognized_record`); None detects the format per record.
        pack: several whole samples per row of `max_length` tokens, position ids restarting
            per sample (`collate.pack_samples`); grouping is then not needed.
        batch_size: samples per batch.
        buffer_batches: batches held for grouping.
        seed: the shuffle of grouped batches.
        pad_to_multiple_of: round each batch's width up to this.
        on_error: `skip` counts a bad record; `raise` stops at the first with its file:line.
    """

    template: str = "auto"
    max_length: int | None = 2048
    last_turn_only: bool = False
    preference: bool = False
    group_by_length: bool = True
    pack: bool = False
    record_format: str | None = None
    batch_size: int = 8
    buffer_batches: int = 64
    seed: int = 0
    pad_to_multiple_of: int | None = None
    on_error: str = "skip"

    def __post_init__(self) -> None:
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2 (or None), found {self.max_length}")
        for name in ("batch_size", "buffer_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, found {getattr(self, name)}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ConfigError(
                f"pad_to_multiple_of must be at least 1 (or None), found {self.pad_to_multiple_of}"
            )
        if self.pack and (self.max_length is None or self.preference):
            raise ConfigError(
                "pack fills rows of max_length tokens: set max_length, and pack SFT samples, "
                "not preference pairs"
            )
        if self.record_format is not None and self.record_format not in RECORD_FORMATS:
            raise ConfigError(
                f"record_format must be one of {', '.join(RECORD_FORMATS)} (or None), found "
                f"{self.record_format!r}"
            )
        if self.on_error not in ON_ERRORS:
            raise ConfigError(
                f"on_error must be one of {', '.join(ON_ERRORS)}, found {self.on_error!r}"
            )


class SFTStream:
    """Iterating yields padded batches (or preference pairs); every iteration is a new pass.

    `samples()` yields the samples one by one in file order, unpadded (what the SFT store
    writes); `report` holds the counts of the latest pass.
    """

    def __init__(self, sources, tokenizer, config: SFTConfig, backend: str = "auto") -> None:
        self.sources = source_names(sources)
        self.config = config
        started = time.perf_counter()
        self.tokenizer = (
            tokenizer if isinstance(tokenizer, LoadedTokenizer) else load_tokenizer(tokenizer)
        )
        self.tokenizer_load_seconds = time.perf_counter() - started
        self.template = check_template(config.template, self.tokenizer)
        self.encoder = make_encoder(self.tokenizer, backend)
        self._prefilled = PrefilledTokenizer(self.tokenizer.hf)
        # The encoder of encode.py is kept per tokenizer object: this one reads prefilled ids.
        self._encoding_tokenizer = dataclasses.replace(self.tokenizer, hf=self._prefilled)
        self.layout = BatchLayout(
            self.template, self._encoding_tokenizer, config.max_length, config.last_turn_only
        )
        self._eos_token = self.tokenizer.hf.id_to_token(self.tokenizer.eos_id)
        self._report = Report(config.on_error)
        self.files: list = []

    @property
    def report(self) -> dict:
        return self._report.as_dict()

    def _start(self) -> None:
        self._report = report = Report(self.config.on_error)
        self._started = time.perf_counter()
        self.files = discover(self.sources, report)
        report.values.update(
            records=0,
            samples=0,
            pairs=0,
            tokens=0,
            trained_tokens=0,
            truncated_samples=0,
            truncated_tokens=0,
            batches=0,
            padded_tokens=0,
            padding_ratio=0.0,
            sft_fixes={},
            content_texts=0,
            distinct_content_texts=0,
            template=self._template_name(),
            max_length=self.config.max_length,
            last_turn_only=self.config.last_turn_only,
            tokenizer=self.tokenizer.name,
            backend=self.encoder.name,
            tokenizer_load_seconds=round(self.tokenizer_load_seconds, 3),
        )

    def _template_name(self) -> str:
        name = self.template.name
        if self.config.template == AUTO and name != AUTO:
            return f"{name} (auto: the tokenizer has no chat template)"
        return name

    def _finish(self) -> None:
        values = self._report.values
        values["records"] = sum(entry.get("records", 0) for entry in self._report.files.values())
        seconds = time.perf_counter() - self._started
        values["seconds"] = round(seconds, 3)
        count = values["pairs"] if self.config.preference else values["samples"]
        values["samples_per_second"] = round(count / seconds, 1) if seconds else 0.0
        values["peak_rss_mb"] = round(peak_rss_mb(), 1)
        if count == 0:
            raise DataError(nothing_used(self.sources, self._report.as_dict(), "samples"))

    def _content_ids(self, pairs: list[PreferencePair]) -> dict[str, list[int]]:
        """The ids of every content text of `pairs` (turns, system, both answers), from one
        backend call; the templates' fixed strings are few and kept by the encoder's cache."""
        default = self.template.default_system
        texts: set[str] = set()
        for pair in pairs:
            texts.update(turn.content for turn in pair.prompt.turns)
            texts.update((pair.chosen, pair.rejected))
            system = system_text(pair.prompt, default)
            if system is not None:
                texts.add(system)
        unique = list(texts)
        ids, offsets = self.encoder.encode_batch(unique)
        bounds = offsets.tolist()
        flat = ids.tolist()
        return {text: flat[bounds[i] : bounds[i + 1]] for i, text in enumerate(unique)}

    def _parsed(self, kind: str) -> Iterator[tuple[str, list]]:
        """`(path, [(line, item), ...])` per read batch that kept at least one record."""
        for path, records in read_json_objects(self.files, self._report):
            items = list(
                parse_records(records, path, self._report, kind, self.config.record_format)
            )
            if items:
                yield path, items

    def _read_and_encode(self) -> Iterator[tuple[str, list, dict]]:
        for path, items in self._parsed("preference"):
            yield path, items, self._content_ids([pair for _, pair in items])

    def _planned(self) -> Iterator[tuple[str, Plan]]:
        for path, items in self._parsed("sft"):
            yield path, self.layout.plan(items)

    def _laid_out(self) -> Iterator[tuple[str, list, list, int]]:
        for path, plan in threaded(self._planned(), READ_AHEAD, "sft-reader"):
            ids, offsets = self.encoder.encode_batch(list(plan.texts))
            values = self._report.values
            values["content_texts"] += plan.mentions
            values["distinct_content_texts"] += len(plan.texts)
            yield path, *self.layout.lay_out(plan, ids, offsets)

    def samples(self) -> Iterator[Sample]:
        """Every sample, in file order, unpadded.

        Three stages overlap: reading and parsing with the piece references of each read batch
        (`layout.plan`), then the backend's encoding of its content texts and the numpy layout
        (`layout.lay_out`), each in a thread of its own, and here the counting and handing out.
        quicktok and numpy release the GIL, so parsing the next batch runs beside them.
        """
        if self.config.preference:
            raise ConfigError("samples() is for SFT streams; use pairs() with preference=True")
        self._start()
        report, values = self._report, self._report.values
        for path, samples, skipped, trained in threaded(self._laid_out(), READ_AHEAD, "sft-layout"):
            for line, reason, found in skipped:
                log.debug("skipped a conversation at %s:%s: %s", path, line, reason)
                report.skip(reason, path, line, found=found)
            values["samples"] += len(samples)
            values["trained_tokens"] += trained
            for _, sample in samples:
                values["tokens"] += len(sample)
                if sample.truncated_tokens:
                    values["truncated_samples"] += 1
                    values["truncated_tokens"] += sample.truncated_tokens
                yield sample
        self._finish()

    def _pairs_parsed(self) -> Iterator[tuple[str, list]]:
        """Parsed pairs with their content ids ready, one read batch at a time."""
        self._start()
        for path, items, ids in threaded(self._read_and_encode(), READ_AHEAD, "sft-reader"):
            self._prefilled.ids = ids
            yield path, items
        self._prefilled.ids = {}

    def pairs(self) -> Iterator[dict]:
        """`{"prompt_ids", "chosen_ids", "rejected_ids"}` (lists of ints) per preference pair."""
        if not self.config.preference:
            raise ConfigError("pairs() needs preference=True")
        for path, items in self._pairs_parsed():
            values = self._report.values
            for line, pair in items:
                try:
                    encoded = encode_preference(
                        pair, self.template, self._encoding_tokenizer, self.config.max_length
                    )
                except TemplateRejected as rejected:
                    self._report.skip(rejected.reason, path, line, found=rejected.found)
                    continue
                if encoded is None:
                    self._report.skip(
                        NO_ANSWER_TOKEN, path, line, found=f"max_length {self.config.max_length}"
                    )
                    continue
                prompt, chosen, rejected = (part.tolist() for part in encoded)
                values["pairs"] += 1
                values["tokens"] += len(prompt) + len(chosen) + len(rejected)
                yield {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}
        self._finish()

    def __iter__(self) -> Iterator[dict]:
        if self.config.preference:
            yield from self.pairs()
            return
        config = self.config
        samples = self.samples()
        if config.pack:
            yield from self._packed(samples)
            return
        if config.group_by_length:
            batches = length_grouped_batches(
                samples, config.batch_size, config.buffer_batches, config.seed
            )
        else:
            batches = _in_order(samples, config.batch_size)
        padded = total = 0
        for batch in batches:
            arrays = pad_batch(batch, self.tokenizer.pad_id, config.pad_to_multiple_of)
            size = arrays["input_ids"].size
            real = sum(len(sample) for sample in batch)
            total += size
            padded += size - real
            values = self._report.values
            values["batches"] += 1
            values["padded_tokens"] = padded
            values["padding_ratio"] = round(padded / total, 4)
            yield arrays

    def _packed(self, samples) -> Iterator[dict]:
        config = self.config
        blocks = pack_samples(
            samples, config.max_length, config.buffer_batches * config.batch_size, config.seed
        )
        padded = total = packed = 0
        for batch in _in_order(blocks, config.batch_size):
            values = self._report.values  # the pass's report, made when `samples` starts
            arrays = packed_batch(batch, config.max_length, self.tokenizer.pad_id)
            total += arrays["input_ids"].size
            padded += int(arrays["input_ids"].size - arrays["attention_mask"].sum())
            packed += len(batch)
            values["batches"] += 1
            values["blocks"] = packed
            values["padded_tokens"] = padded
            values["padding_ratio"] = round(padded / total, 4)
            values["samples_per_block"] = round(values["samples"] / packed, 2)
            yield arrays


def _in_order(samples, batch_size: int) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def stream_sft(
    sources,
    tokenizer: str | LoadedTokenizer | None = None,
    template: str = "auto",
    max_length: int | None = 2048,
    last_turn_only: bool = False,
    preference: bool = False,
    group_by_length: bool = True,
    batch_size: int = 8,
    buffer_batches: int = 64,
    seed: int = 0,
    pad_to_multiple_of: int | None = None,
    on_error: str = "skip",
    *,
    pack: bool = False,
    record_format: str | None = None,
    backend: str = "auto",
) -> SFTStream:
    """Stream SFT batches from JSON lines / JSON array files (files, folders, globs, codecs).

    >>> for batch in streampack.stream_sft("data/sft/", max_length=1024):
    ...     batch["input_ids"], batch["labels"], batch["attention_mask"]  # int64 (batch, longest)

    With `pack=True` each batch is `batch_size` rows of exactly `max_length` tokens holding
    whole samples, with `position_ids` that restart per sample (`collate.packed_batch`).
    With `preference=True` each item is one pair's `prompt_ids`, `chosen_ids`, `rejected_ids`
    (lists of ints, unpadded). Bad records are counted in `.report` with their file:line, or
    raise a `DataError` with `on_error="raise"`; a pass that makes no sample raises one too.
    """
    config = SFTConfig(
        template=template,
        max_length=max_length,
        last_turn_only=last_turn_only,
        preference=preference,
        group_by_length=group_by_length,
        pack=pack,
        record_format=record_format,
        batch_size=batch_size,
        buffer_batches=buffer_batches,
        seed=seed,
        pad_to_multiple_of=pad_to_multiple_of,
        on_error=on_error,
    )
    return SFTStream(sources, tokenizer, config, backend=backend)
