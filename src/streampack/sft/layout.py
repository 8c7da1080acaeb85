"""Many conversations laid out at once: piece references per conversation, then numpy gathers.

A template writes each turn as a few fixed strings around the turn's text. Rendering a turn
with placeholders instead of its text gives the turn's *shape*: its fixed pieces, encoded once,
and the slots where the turn's content and the system text go. A conversation is then a short
list of references (a content text of the batch, or a fixed piece), and a read batch of them
becomes token ids and labels with one gather over the batch's content ids:

```
refs    [P0 c0 P1 P2 c1 P3 P4 ...]        P: a fixed piece, c: a content text of the batch
pool    content ids of the batch ++ ids of every fixed piece
ids     pool[starts[ref] : ends[ref]] for every ref, concatenated
labels  ids where the piece is trained, else -100
```

Only conversations the fast path cannot take go through `encode.encode_conversation`: those
longer than `max_length` (rounds dropped, prompt cut) and those without a trained token. A
template whose content is not a segment of its own (a custom one that writes `f"{text}\\n"`)
is not compiled at all and every conversation takes that path. Both paths give the same ids:
a test compares them on every bundled SFT file and template.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..pack import IGNORE_INDEX
from .encode import Sample, _encode, _encoder
from .formats import ANSWER_ROLES, Conversation, Turn
from .templates import Segment, Template, system_text

# Placeholders for a turn's content and the system text while a shape is rendered.
_CONTENT = "\x00streampack:content\x00"
_SYSTEM = "\x00streampack:system\x00"


class _Slot:
    """Where a conversation's text goes in a shape."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name} slot>"


CONTENT_SLOT = _Slot("content")
SYSTEM_SLOT = _Slot("system")


@dataclass(frozen=True, slots=True)
class Shape:
    """One rendered part: per piece, a fixed piece reference (`~index`) or a slot, and whether
    the piece is trainable (when its turn is trained)."""

    pieces: tuple
    trainable: tuple[bool, ...]
    untrained: tuple[bool, ...]


@dataclass(slots=True)
class Plan:
    """A read batch as piece references; no token exists yet.

    Attributes:
        texts: the distinct content texts, in first-seen order (text -> index): what the
            backend encodes.
        refs: per piece, a text index (>= 0) or a fixed piece as `~index` (< 0).
        learn: per piece, whether its tokens are labels.
        counts: per conversation, its number of pieces.
        mentions: content texts before duplicates were merged (a system text repeated on
            every record is encoded once per batch).
    """

    lines: list[int]
    conversations: list[Conversation]
    texts: dict[str, int]
    refs: list[int]
    learn: list[bool]
    counts: list[int]
    mentions: int


class _Ids:
    """What `tokenizers.Encoding` offers the encoder: `.ids`."""

    __slots__ = ("ids",)

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids


class PrefilledTokenizer:
    """The HF tokenizer, but `encode` answers from ids the backend already computed.

    `encode.py` asks for one content text at a time; where those were encoded for the whole
    batch in one backend call, this hands them over. A text not prefilled falls through to HF.
    """

    def __init__(self, hf) -> None:
        self._hf = hf
        self.ids: dict[str, list[int]] = {}

    def __getattr__(self, name):
        return getattr(self._hf, name)

    def encode(self, text: str, add_special_tokens: bool = True):
        ids = self.ids.get(text) if not add_special_tokens else None
        if ids is None:
            return self._hf.encode(text, add_special_tokens=add_special_tokens)
        return _Ids(ids)


class BatchLayout:
    """Lays out read batches of conversations for one template and tokenizer.

    `tokenizer` is a `LoadedTokenizer` whose `hf` is a `PrefilledTokenizer`: the slow path
    reads the batch's content ids through it. `plan` is pure Python, `lay_out` mostly numpy, so
    a pipeline can run them in different threads.
    """

    def __init__(
        self, template: "str | Template", tokenizer, max_length: int | None, last_turn_only: bool
    ) -> None:
        self.encoder = _encoder(template, tokenizer)
        self.template = self.encoder.template
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.last_turn_only = last_turn_only
        self._piece_index: dict[tuple[int, ...], int] = {}
        self._piece_ids: list[int] = []
        self._piece_offsets: list[int] = [0]
        self._pool_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        self._shapes: dict[tuple, Shape | None] = {}
        # Shapes come from `turn` and `system`; a template with its own `blocks` (the Jinja
        # chat template of `template="auto"`) renders whole conversations instead.
        self.compiled = type(self.template).blocks is Template.blocks
        # What opens every sample: the tokenizer's BOS (where the template writes none) and the
        # template's own prefix, one fixed piece, never trained.
        first = list(self.encoder.prefix)
        for segment in self.template.prefix():
            first += self.encoder.segment_ids(segment.text, segment.special)
        self._prefix = Shape((self._piece(tuple(first)),), (False,), (False,)) if first else None

    # Shapes.

    def _piece(self, ids: tuple[int, ...]) -> int:
        index = self._piece_index.get(ids)
        if index is None:
            index = self._piece_index[ids] = len(self._piece_offsets) - 1
            self._piece_ids.extend(ids)
            self._piece_offsets.append(len(self._piece_ids))
        return ~index

    def _segment_ids(self, segment: Segment) -> list[int]:
        return list(self.encoder.segment_ids(segment.text, segment.special))

    def _compile(self, segments: Sequence[Segment]) -> Shape | None:
        """The shape of rendered segments; None if a placeholder is inside another text."""
        pieces: list = []
        trainable: list[bool] = []
        pending: list[int] = []
        pending_trainable = False
        for segment in segments:
            slot = {_CONTENT: CONTENT_SLOT, _SYSTEM: SYSTEM_SLOT}.get(segment.text)
            if slot is None and (_CONTENT in segment.text or _SYSTEM in segment.text):
                return None
            if slot is None and (not pending or pending_trainable == segment.trainable):
                pending += self._segment_ids(segment)
                pending_trainable = segment.trainable
                continue
            if pending:
                pieces.append(self._piece(tuple(pending)))
                trainable.append(pending_trainable)
                pending = []
            if slot is None:
                pending = self._segment_ids(segment)
                pending_trainable = segment.trainable
            else:
                pieces.append(slot)
                trainable.append(segment.trainable)
        if pending:
            pieces.append(self._piece(tuple(pending)))
            trainable.append(pending_trainable)
        return Shape(tuple(pieces), tuple(trainable), (False,) * len(pieces))

    def _turn_shape(self, role: str, previous: str | None, with_system: bool) -> Shape | None:
        key = (role, previous, with_system)
        if key not in self._shapes:
            segments = self.template.turn(
                Turn(role, _CONTENT),
                previous,
                self.encoder.eos_token,
                _SYSTEM if with_system else None,
            )
            shape = self._compile(segments)
            if shape is None:
                self.compiled = False
            self._shapes[key] = shape
        return self._shapes[key]

    def _system_shape(self) -> Shape | None:
        key = ("system",)
        if key not in self._shapes:
            segments = self.template.system(_SYSTEM)
            shape = self._compile(segments) if segments else None
            if segments and shape is None:
                self.compiled = False
            self._shapes[key] = shape
        return self._shapes[key]

    # Stage 1: references.

    def plan(self, items: Sequence[tuple[int, Conversation]]) -> Plan:
        """The piece references of `(line, conversation)` items (Python only, no tokens)."""
        texts: dict[str, int] = {}
        refs: list[int] = []
        learn: list[bool] = []
        counts: list[int] = []
        mentions = 0
        default_system = self.template.default_system
        template_system = self._system_shape() if self.compiled else None
        for _, conversation in items:
            begin = len(refs)
            if self._prefix is not None:
                refs += self._prefix.pieces
                learn += self._prefix.untrained
            system = system_text(conversation, default_system)
            system_ref = -1
            if system is not None:
                system_ref = texts.setdefault(system, len(texts))
                if template_system is not None:
                    refs += [system_ref if p is SYSTEM_SLOT else p for p in template_system.pieces]
                    learn += template_system.untrained
            previous = "system" if system is not None else None
            turns = conversation.turns
            last_answer = -1
            if self.last_turn_only:
                for index in range(len(turns) - 1, -1, -1):
                    if turns[index].role in ANSWER_ROLES:
                        last_answer = index
                        break
            for index, turn in enumerate(turns):
                content = texts.setdefault(turn.content, len(texts))
                if not self.compiled:
                    continue  # `lay_out` encodes every conversation on its own
                shape = self._turn_shape(turn.role, previous, index == 0 and system is not None)
                if shape is None:
                    continue
                refs += [
                    content if p is CONTENT_SLOT else system_ref if p is SYSTEM_SLOT else p
                    for p in shape.pieces
                ]
                trained = turn.role in ANSWER_ROLES and (
                    not self.last_turn_only or index == last_answer
                )
                learn += shape.trainable if trained else shape.untrained
                previous = turn.role
            counts.append(len(refs) - begin)
            mentions += len(turns) + (system is not None)
        return Plan(
            [line for line, _ in items],
            [conversation for _, conversation in items],
            texts,
            refs,
            learn,
            counts,
            mentions,
        )

    # Stage 2: tokens.

    def _pool(self, text_ids: np.ndarray, text_offsets: np.ndarray):
        """Content ids of the batch followed by every fixed piece's ids, with their offsets."""
        pieces = len(self._piece_offsets) - 1
        if self._pool_cache is None or self._pool_cache[0] != pieces:
            # `plan` may be adding pieces in another thread: offsets first, then only their ids.
            offsets = np.asarray(self._piece_offsets[: pieces + 1], dtype=np.int64)
            ids = np.asarray(self._piece_ids[: offsets[-1]], dtype=np.int64)
            self._pool_cache = (pieces, ids, offsets)
        _, piece_ids, piece_offsets = self._pool_cache
        ids = np.concatenate([text_ids.astype(np.int64, copy=False), piece_ids])
        offsets = np.concatenate([text_offsets, text_offsets[-1] + piece_offsets[1:]])
        return ids, offsets

    def lay_out(
        self, plan: Plan, text_ids: np.ndarray, text_offsets: np.ndarray
    ) -> tuple[list[tuple[int, Sample]], list[tuple[int, str, str]], int]:
        """`([(line, sample), ...], [(line, reason, found), ...], trained tokens)`, in order.

        `text_ids` and `text_offsets` are the backend's encoding of `plan.texts`.
        """
        if not plan.lines:
            return [], [], 0
        fast = self._gather(plan, text_ids, text_offsets) if self.compiled else None
        samples: list[tuple[int, Sample]] = []
        skipped: list[tuple[int, str, str]] = []
        trained = 0
        for number, (line, conversation) in enumerate(
            zip(plan.lines, plan.conversations, strict=True)
        ):
            done = fast[number] if fast is not None else None
            if done is None:
                result = self._slow(conversation, text_ids, text_offsets, plan)
                if isinstance(result, tuple):
                    skipped.append((line, *result))
                    continue
                done = result, int(np.count_nonzero(result.labels != IGNORE_INDEX))
            samples.append((line, done[0]))
            trained += done[1]
        return samples, skipped, trained

    def _gather(self, plan: Plan, text_ids, text_offsets) -> list[tuple[Sample, int] | None]:
        """Per conversation, its sample and trained tokens, or None where `_slow` must do it:
        longer than `max_length`, or not one trained token."""
        pool_ids, pool_offsets = self._pool(text_ids, text_offsets)
        refs = np.asarray(plan.refs, dtype=np.int64)
        index = np.where(refs >= 0, refs, len(plan.texts) + ~refs)
        starts = pool_offsets[index]
        lengths = pool_offsets[index + 1] - starts
        piece_ends = np.cumsum(lengths)
        gather = np.arange(piece_ends[-1] if len(piece_ends) else 0, dtype=np.int64)
        gather += np.repeat(starts - (piece_ends - lengths), lengths)
        ids = pool_ids[gather]
        learned = np.repeat(np.asarray(plan.learn, dtype=bool), lengths)
        labels = np.where(learned, ids, IGNORE_INDEX)

        # Token bounds of each conversation; one with no piece ends where the previous one did.
        counts = np.asarray(plan.counts, dtype=np.int64)
        ends = np.zeros(len(counts), dtype=np.int64)
        ends[counts > 0] = piece_ends[np.cumsum(counts)[counts > 0] - 1]
        ends = np.maximum.accumulate(ends)
        begins = np.concatenate([[0], ends[:-1]])
        learned_before = np.concatenate([[0], np.cumsum(learned, dtype=np.int64)])
        trained = learned_before[ends] - learned_before[begins]
        usable = trained > 0
        if self.max_length is not None:
            usable &= ends - begins <= self.max_length
        ones = np.ones(int((ends - begins).max()), dtype=np.int64)
        ones.flags.writeable = False
        return [
            (Sample(ids[begin:end], labels[begin:end], ones[: end - begin]), count) if ok else None
            for begin, end, count, ok in zip(
                begins.tolist(), ends.tolist(), trained.tolist(), usable.tolist(), strict=True
            )
        ]

    def _slow(self, conversation: Conversation, text_ids, text_offsets, plan: Plan):
        """`encode._encode` on one conversation, its content ids taken from the batch's."""
        wanted = {turn.content for turn in conversation.turns}
        system = system_text(conversation, self.template.default_system)
        if system is not None:
            wanted.add(system)
        prefilled = {}
        for text in wanted:
            index = plan.texts[text]
            prefilled[text] = text_ids[text_offsets[index] : text_offsets[index + 1]].tolist()
        self.tokenizer.hf.ids = prefilled
        try:
            return _encode(
                conversation, self.template, self.tokenizer, self.max_length, self.last_turn_only
            )
        finally:
            self.tokenizer.hf.ids = {}
