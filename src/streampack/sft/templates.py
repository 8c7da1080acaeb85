"""Chat templates: a conversation becomes segments of text, each marked special and trainable.

A segment is `(text, is_special_marker, trainable)`. Special markers (`<|im_start|>`, `</s>`)
are encoded as their one special-token id; every other segment is plain text, so nothing the
data says can become a marker. Trainable are the answer texts (`assistant` and `function_call`
turns) and the marker that closes each of them; headers, system, user and tool turns are not.

The layouts, written from each model family's published prompt format:

| template         | one exchange                                                         |
|------------------|----------------------------------------------------------------------|
| `chatml`, `qwen` | `<|im_start|>user\\n{q}<|im_end|>\\n`                                 |
|                  | `<|im_start|>assistant\\n{a}<|im_end|>\\n`                            |
| `llama3`         | `<|begin_of_text|>` once, then                                       |
|                  | `<|start_header_id|>user<|end_header_id|>\\n\\n{q}<|eot_id|>`           |
|                  | `<|start_header_id|>assistant<|end_header_id|>\\n\\n{a}<|eot_id|>`      |
| `mistral`        | `<s>` once, then `[INST] {q} [/INST]{a}</s>`                         |
| `vicuna`         | `USER: {q} ASSISTANT: {a}</s>`                                       |
| `alpaca`         | `### Instruction:\\n{q}\\n\\n### Response:\\n{a}{eos}`                  |

- The system text is its own turn in `chatml` and `llama3`, goes before the first
  `[INST]` with a blank line in `mistral` (which has no system role), and opens the text,
  followed by a space (`vicuna`) or a blank line (`alpaca`). Only `alpaca` has a default system
  text, the instruction preamble of its published format; `chatml` has none: Qwen's templates
  add one, but the built-in tokenizer carries no `tokenizer_config.json` to take it from.
- Tool results are a `tool` turn in `chatml`, an `ipython` turn in `llama3`, and a user turn
  in the other three; `function_call` turns are rendered as assistant turns. Tool definitions
  are appended to the system text as `Available tools (JSON):\\n{tools}`.
  Each model's own tool layout (Qwen's `<tools>` system text) comes only with the
  tokenizer's own Jinja template, `template="auto"` (`jinja.py`).
- `mistral` writes `[INST]` and `[/INST]` as text, as Mistral 7B Instruct v0.1/v0.2 tokenize
  them; v0.3 tokenizers have them as control tokens, which only `auto` could match.
- `alpaca` closes answers with the tokenizer's own EOS; `vicuna` and `mistral` with `</s>`.
- Text is encoded segment by segment, so a content that starts with a space or a line break
  may split differently from a tokenizer run over the whole rendered string; each content's
  tokens are exactly those of the content alone.
"""

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from ..errors import ConfigError
from .formats import ANSWER_ROLES, Conversation, Turn

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


class Segment(NamedTuple):
    text: str
    special: bool = False
    trainable: bool = False


@dataclass(frozen=True)
class Block:
    """The segments of one rendered part: `prefix` (a BOS), `system`, or a turn's role."""

    kind: str
    segments: tuple[Segment, ...]

    @property
    def is_answer(self) -> bool:
        return self.kind in ANSWER_ROLES


def _text(text: str) -> Segment:
    return Segment(text, False, False)


def _mark(text: str, trainable: bool = False) -> Segment:
    return Segment(text, True, trainable)


def _answer(text: str) -> Segment:
    return Segment(text, False, True)


def system_text(conversation: Conversation, default: str | None = None) -> str | None:
    """The system text with the tool definitions appended, or `default` if there is neither."""
    parts = [conversation.system or ""]
    if conversation.tools:
        parts.append(f"Available tools (JSON):\n{conversation.tools}")
    text = "\n\n".join(part for part in parts if part)
    return text or default


class Template:
    """Renders conversations; `markers` are the special tokens it writes (besides an EOS)."""

    name = "template"
    markers: tuple[str, ...] = ()
    # True where the template writes its own BOS; else the tokenizer's prefix is put first.
    writes_bos = False
    # True where answers close with the tokenizer's EOS rather than a fixed marker.
    uses_eos = False
    default_system: str | None = None

    def blocks(self, conversation: Conversation, eos_token: str = "</s>") -> list[Block]:
        blocks = [Block("prefix", tuple(self.prefix()))] if self.prefix() else []
        system = system_text(conversation, self.default_system)
        if system is not None and self.system(system):
            blocks.append(Block("system", tuple(self.system(system))))
        previous = "system" if system is not None else None
        for index, turn in enumerate(conversation.turns):
            first_user = system if index == 0 else None
            segments = self.turn(turn, previous, eos_token, first_user)
            blocks.append(Block(turn.role, tuple(segments)))
            previous = turn.role
        return blocks

    def render(self, conversation: Conversation, eos_token: str = "</s>") -> list[Segment]:
        """All segments, in order."""
        return [s for block in self.blocks(conversation, eos_token) for s in block.segments]

    def text(self, conversation: Conversation, eos_token: str = "</s>") -> str:
        """The rendered string, as a tokenizer run over it whole would see it."""
        return "".join(segment.text for segment in self.render(conversation, eos_token))

    def prefix(self) -> list[Segment]:
        return []

    def system(self, text: str) -> list[Segment]:
        raise NotImplementedError(f"template {self.name} does not define system turns")

    def turn(self, turn: Turn, previous: str | None, eos: str, system: str | None):
        raise NotImplementedError(f"template {self.name} does not define turns")


class ChatML(Template):
    name = "chatml"
    markers = ("<|im_start|>", "<|im_end|>")
    roles: ClassVar[dict[str, str]] = {
        "user": "user",
        "assistant": "assistant",
        "function_call": "assistant",
    }

    def _message(self, role: str, content: str, answer: bool) -> list[Segment]:
        return [
            _mark("<|im_start|>"),
            _text(f"{role}\n"),
            _answer(content) if answer else _text(content),
            _mark("<|im_end|>", trainable=answer),
            _text("\n"),
        ]

    def system(self, text):
        return self._message("system", text, False)

    def turn(self, turn, previous, eos, system):
        role = self.roles.get(turn.role, "tool")
        return self._message(role, turn.content, turn.role in ANSWER_ROLES)


class Llama3(Template):
    name = "llama3"
    markers = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    writes_bos = True
    roles: ClassVar[dict[str, str]] = {
        "user": "user",
        "assistant": "assistant",
        "function_call": "assistant",
    }

    def prefix(self):
        return [_mark("<|begin_of_text|>")]

    def _message(self, role: str, content: str, answer: bool) -> list[Segment]:
        return [
            _mark("<|start_header_id|>"),
            _text(role),
            _mark("<|end_header_id|>"),
            _text("\n\n"),
            _answer(content) if answer else _text(content),
            _mark("<|eot_id|>", trainable=answer),
        ]

    def system(self, text):
        return self._message("system", text, False)

    def turn(self, turn, previous, eos, system):
        role = self.roles.get(turn.role, "ipython")
        return self._message(role, turn.content, turn.role in ANSWER_ROLES)


class Mistral(Template):
    name = "mistral"
    markers = ("<s>", "</s>")
    writes_bos = True

    def prefix(self):
        return [_mark("<s>")]

    def system(self, text):
        return []  # put into the first user turn

    def turn(self, turn, previous, eos, system):
        if turn.role in ANSWER_ROLES:
            return [_answer(turn.content), _mark("</s>", trainable=True)]
        opening = [_text("[INST] ")]
        if system is not None:
            opening += [_text(system), _text("\n\n")]
        return [*opening, _text(turn.content), _text(" [/INST]")]


class Vicuna(Template):
    name = "vicuna"
    markers = ("</s>",)

    def system(self, text):
        return [_text(text), _text(" ")]

    def turn(self, turn, previous, eos, system):
        if turn.role in ANSWER_ROLES:
            return [_text("ASSISTANT: "), _answer(turn.content), _mark("</s>", trainable=True)]
        return [_text("USER: "), _text(turn.content), _text(" ")]


class Alpaca(Template):
    name = "alpaca"
    uses_eos = True
    default_system = ALPACA_PREAMBLE

    def system(self, text):
        return [_text(text), _text("\n\n")]

    def turn(self, turn, previous, eos, system):
        if turn.role in ANSWER_ROLES:
            return [_text("### Response:\n"), _answer(turn.content), _mark(eos, trainable=True)]
        # A blank line after the EOS that closed the previous answer, as between sections.
        gap = [_text("\n\n")] if previous in ANSWER_ROLES else []
        return [*gap, _text("### Instruction:\n"), _text(turn.content), _text("\n\n")]


TEMPLATES: dict[str, Template] = {
    "chatml": ChatML(),
    "qwen": ChatML(),
    "llama3": Llama3(),
    "mistral": Mistral(),
    "vicuna": Vicuna(),
    "alpaca": Alpaca(),
}


def get_template(template: "str | Template") -> Template:
    """A built-in template by name, or `template` itself."""
    if isinstance(template, Template):
        return template
    if template == "auto":
        raise ConfigError(
            "template auto is a tokenizer's own chat template: get it with "
            "sft.auto_template(tokenizer), or pass the tokenizer with template='auto'"
        )
    if template not in TEMPLATES:
        raise ConfigError(
            f"template must be auto (the tokenizer's own chat template) or one of "
            f"{', '.join(TEMPLATES)}, found {template!r}"
        )
    return TEMPLATES[template]
