"""Conversations → token ids and labels, with the template's markers as their special ids.

Layout, for prompt tokens [p1 p2] and answer tokens [r1 r2] under `chatml` (S = `<|im_start|>`,
E = `<|im_end|>`, u/a = the role headers `user\\n`/`assistant\\n`, n = `\\n`):

    input_ids  S u p1 p2 E n S a r1 r2 E n
    labels     - - -  -  - - - - r1 r2 E -      (- is -100)

Labels are the ids themselves (the model shifts them), -100 wherever nothing is learned.
Content text is encoded with `add_special_tokens=False` on a tokenizer that encodes
special-token strings as plain text, so `<|im_end|>` inside a user's text is a few ordinary
tokens, never the id that ends a turn.

`max_length`: the earliest whole rounds (a user turn and the turns up to the next user turn)
are dropped first, the system text kept, while more than one round is left; then the prompt is
cut from the left, and where the answers alone are longer than the room left, they are cut from
the right. The role header of the first kept answer always stays before it; when not even the
header and one answer token fit, the conversation is skipped as
`no_answer_token_after_truncation`: no sample ever has every label -100.
"""

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..pack import IGNORE_INDEX
from ..report import Report
from ..tokenize import LoadedTokenizer
from .formats import Conversation, PreferencePair, Turn
from .jinja import AUTO, TemplateRejected, auto_template
from .templates import Block, Template, get_template

log = logging.getLogger(__name__)

NO_ANSWER_TOKEN = "no_answer_token_after_truncation"
NO_ASSISTANT_TURN = "no_assistant_turn"


@dataclass(slots=True)
class Sample:
    """One training sequence: int64 arrays of equal length.

    Attributes:
        truncated_tokens: tokens of the rendered conversation that `max_length` removed.
        dropped_rounds: whole rounds removed from the start for `max_length`.
    """

    input_ids: np.ndarray
    labels: np.ndarray
    attention_mask: np.ndarray
    truncated_tokens: int = 0
    dropped_rounds: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


class _Encoder:
    """Segment ids for one template and tokenizer, with the marker ids checked once."""

    def __init__(self, template: Template, tokenizer: LoadedTokenizer) -> None:
        self.template = template
        self.tokenizer = tokenizer
        self.eos_token = tokenizer.hf.id_to_token(tokenizer.eos_id)
        added = {token.content for token in tokenizer.hf.get_added_tokens_decoder().values()}
        self.marker_ids: dict[str, int] = {}
        for marker in (*template.markers, *((self.eos_token,) if template.uses_eos else ())):
            token_id = tokenizer.token_to_id(marker)
            if token_id is None or marker not in added:
                found = "absent" if token_id is None else f"an ordinary token (id {token_id})"
                raise ConfigError(
                    f"template {template.name!r} needs {marker!r} as a special token, but in "
                    f"tokenizer {tokenizer.name} it is {found}; choose the template of this "
                    f"tokenizer's model (chatml for Qwen)"
                )
            self.marker_ids[marker] = token_id
        self.prefix = () if template.writes_bos else tuple(tokenizer.prefix)
        self._cache: dict[str, list[int]] = {}

    def text_ids(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tokenizer.hf.encode(text, add_special_tokens=False).ids
            if len(self._cache) < 4096:
                self._cache[text] = ids
        return ids

    def segment_ids(self, text: str, special: bool) -> list[int]:
        return [self.marker_ids[text]] if special else self.text_ids(text)

    def layout(self, blocks: list[Block], last_turn_only: bool):
        """ids, labels, and the header length of the first trained block (None if no answer)."""
        ids = list(self.prefix)
        labels = [IGNORE_INDEX] * len(ids)
        answers = [i for i, block in enumerate(blocks) if block.is_answer]
        trained = set(answers[-1:] if last_turn_only else answers)
        header = None
        for index, block in enumerate(blocks):
            block_start = len(ids)
            for text, special, trainable in block.segments:
                piece = self.segment_ids(text, special)
                learn = trainable and index in trained
                if learn and header is None and piece:
                    header = len(ids) - block_start
                ids += piece
                labels += piece if learn else [IGNORE_INDEX] * len(piece)
        return ids, labels, header


def _rounds(turns: tuple[Turn, ...]) -> list[int]:
    """Indexes of the turns that start a round (the user turns)."""
    return [index for index, turn in enumerate(turns) if turn.role == "user"]


def _cut(ids: list[int], first: int, header: int, max_length: int) -> tuple[int, int] | None:
    """(start, end) of the kept window: prompt cut from the left, then answers from the right."""
    if len(ids) <= max_length:
        return 0, len(ids)
    if max_length - header < 1:
        return None
    keep_prompt = min(max(max_length - (len(ids) - first), header), first)
    start = first - keep_prompt
    return start, start + max_length


def _encode(
    conversation, template, tokenizer, max_length, last_turn_only
) -> Sample | tuple[str, str]:
    """The sample, or why there is none: `(reason, found)`."""
    encoder = _encoder(template, tokenizer)
    starts = _rounds(conversation.turns)
    dropped = 0
    while True:
        kept = Conversation(
            conversation.system,
            conversation.turns[starts[dropped] if dropped else 0 :],
            conversation.tools,
        )
        try:
            blocks = encoder.template.blocks(kept, encoder.eos_token)
        except TemplateRejected as rejected:
            return rejected.reason, rejected.found
        ids, labels, header = encoder.layout(blocks, last_turn_only)
        if dropped == 0:
            full_length = len(ids)
        if header is None:
            return NO_ASSISTANT_TURN, "no answer to learn from"
        too_long = max_length is not None and len(ids) > max_length
        if not too_long or dropped + 1 >= len(starts):
            break
        dropped += 1
    first = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    window = (0, len(ids)) if max_length is None else _cut(ids, first, header, max_length)
    if window is None:
        return NO_ANSWER_TOKEN, f"max_length {max_length}"
    start, end = window
    input_ids = np.asarray(ids[start:end], dtype=np.int64)
    return Sample(
        input_ids=input_ids,
        labels=np.asarray(labels[start:end], dtype=np.int64),
        attention_mask=np.ones_like(input_ids),
        truncated_tokens=full_length - len(input_ids),
        dropped_rounds=dropped,
    )


_ENCODERS: dict[tuple[int, int], _Encoder] = {}


def _encoder(template, tokenizer: LoadedTokenizer) -> _Encoder:
    # One per (template, tokenizer) pair: the marker check and the text cache are kept.
    if template == AUTO:
        template = auto_template(tokenizer)
    template = get_template(template)
    key = (id(template), id(tokenizer))
    encoder = _ENCODERS.get(key)
    if encoder is None or encoder.tokenizer is not tokenizer or encoder.template is not template:
        if len(_ENCODERS) > 16:
            _ENCODERS.clear()
        encoder = _ENCODERS[key] = _Encoder(template, tokenizer)
    return encoder


def check_template(template: "str | Template", tokenizer: LoadedTokenizer) -> Template:
    """The template, once its markers are known special tokens of `tokenizer` (else ConfigError)."""
    return _encoder(template, tokenizer).template


def encode_conversation(
    conversation: Conversation,
    template: "str | Template",
    tokenizer: LoadedTokenizer,
    max_length: int | None = None,
    last_turn_only: bool = False,
    *,
    report: Report | None = None,
    path: str = "",
    line: int | None = None,
) -> Sample | None:
    """The sample of one conversation, or None when no answer token can be kept.

    None is counted in `report` (when given) at `path:line` as `no_answer_token_after_truncation`,
    `no_assistant_turn` for a conversation with no answer at all, or, with `template="auto"`,
    `chat_template_error` / `chat_template_changes_text` (see `jinja.py`).
    """
    if max_length is not None and max_length < 1:
        raise ConfigError(f"max_length must be at least 1 (or None), found {max_length}")
    result = _encode(conversation, template, tokenizer, max_length, last_turn_only)
    if isinstance(result, tuple):
        reason, found = result
        log.debug("skipped a conversation at %s:%s: %s", path, line, reason)
        if report is not None:
            report.skip(reason, path, line, found=found)
        return None
    return result


def encode_preference(
    pair: PreferencePair,
    template: "str | Template",
    tokenizer: LoadedTokenizer,
    max_length: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(prompt_ids, chosen_ids, rejected_ids), int64; each answer ends with its closing marker.

    `prompt_ids` ends with the answer's role header, so `prompt + chosen` is exactly the SFT
    layout of the prompt with `chosen` as its last answer. With `max_length`, prompt plus the
    longer answer fits: earliest rounds dropped, then the prompt cut from the left (its answer
    header kept), then the answers cut from the right; None when not one answer token fits.
    """
    encoder = _encoder(template, tokenizer)
    prompt = pair.prompt
    starts = _rounds(prompt.turns)
    dropped = 0
    while True:
        turns = prompt.turns[starts[dropped] if dropped else 0 :]
        parts = [
            _answer_split(
                encoder,
                Conversation(prompt.system, (*turns, Turn("assistant", text)), prompt.tools),
            )
            for text in (pair.chosen, pair.rejected)
        ]
        (prompt_ids, header, chosen), (_, _, rejected) = parts
        longest = max(len(chosen), len(rejected))
        too_long = max_length is not None and len(prompt_ids) + longest > max_length
        if not too_long or dropped + 1 >= len(starts):
            break
        dropped += 1
    if max_length is not None and len(prompt_ids) + longest > max_length:
        if max_length - header < 1:
            return None
        keep_prompt = min(max(max_length - longest, header), len(prompt_ids))
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt :]
        room = max_length - keep_prompt
        chosen, rejected = chosen[:room], rejected[:room]
    return tuple(np.asarray(part, dtype=np.int64) for part in (prompt_ids, chosen, rejected))


def _answer_split(encoder: _Encoder, conversation: Conversation):
    """(prompt ids, answer header length, answer ids) of a conversation ending with its answer."""
    blocks = encoder.template.blocks(conversation, encoder.eos_token)
    *before, last = blocks
    ids, _, _ = encoder.layout(before, last_turn_only=False)
    header = 0
    answer: list[int] = []
    for text, special, trainable in last.segments:
        piece = encoder.segment_ids(text, special)
        if trainable:
            answer += piece
        elif not answer:
            ids += piece
            header += len(piece)
    return ids, header, answer
