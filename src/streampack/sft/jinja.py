"""`template="auto"`: the tokenizer's own Jinja chat template, split back into segments.

Each conversation is rendered twice by `transformers` (the renderer `apply_chat_template`
uses): once with a placeholder where each of its texts goes, once as it is. The placeholder
rendering gives the template's own text around every text of the conversation; putting the
texts back in (as they are, or stripped, for templates that `trim` them) must give the second
rendering exactly, else the conversation is skipped as `chat_template_changes_text` rather than
trained with a wrong mask. So the labels are exact for any template that writes each text once
and whole, which is what chat templates do.

Segments, as for the built-in templates: the template's text is cut at the tokenizer's added
tokens (each becomes its one id) and encoded as text between them; the conversation's texts are
always plain text. Trainable are the answers (`assistant` turns; a `function_call` turn is sent
as an assistant message holding the call's JSON) and the added token that closes each of them
(`<|im_end|>`, `<|eot_id|>`, `</s>`: the first in the template's text after the answer, where
only whitespace comes before it). The template writes its
own BOS if it has one: like `apply_chat_template`, nothing is added around the rendered text.

Tool definitions go to the template's `tools` variable when the template uses one, else into
the system text as the built-in templates do. A tokenizer without a chat template (the built-in
Qwen2.5 ships none) gets `chatml`, which is the layout of Qwen2.5's own template without its
default system text; the report's `template` says which was used.
"""

import json
import logging
import re
from functools import lru_cache
from pathlib import Path

from ..errors import ConfigError, StreampackError
from .formats import ANSWER_ROLES, Conversation
from .templates import Block, Segment, Template, get_template, system_text

log = logging.getLogger(__name__)

AUTO = "auto"
_ROLES = {"user": "user", "assistant": "assistant", "function_call": "assistant", "tool": "tool"}


class TemplateRejected(StreampackError):
    """A conversation the chat template cannot render exactly; `reason` is what is counted."""

    def __init__(self, reason: str, found: str) -> None:
        self.reason = reason
        self.found = found
        super().__init__(f"{reason} ({found})")


def _placeholder(index: int) -> str:
    return f"\x00streampack:{index}\x00"


class JinjaTemplate(Template):
    """A chat template from a tokenizer's `tokenizer_config.json` or `chat_template.jinja`."""

    name = AUTO
    writes_bos = True

    def __init__(self, source: str, chat_template: str, variables: dict, added: list[str]):
        self.source = source
        self.chat_template = chat_template
        self.variables = variables
        self.markers = tuple(added)
        longest_first = sorted(added, key=len, reverse=True)
        self._added = re.compile("|".join(map(re.escape, longest_first)) or "(?!)")
        self._takes_tools = "tools" in chat_template

    def _render(self, messages: list[dict], tools) -> str:
        from jinja2 import TemplateError
        from transformers.utils.chat_template_utils import render_jinja_template

        try:
            rendered, _ = render_jinja_template(
                conversations=[messages],
                tools=tools,
                chat_template=self.chat_template,
                **self.variables,
            )
        except (TemplateError, ValueError, TypeError) as error:
            raise TemplateRejected("chat_template_error", str(error)[:200]) from None
        return rendered[0]

    def _parts(self, conversation: Conversation) -> tuple[list[str], list[str], list | None]:
        """The conversation's texts in order, the kind of each (`system` or a turn's role),
        and the tool definitions for the template's `tools`, if it takes them."""
        tools = None
        if conversation.tools and self._takes_tools:
            try:
                tools = json.loads(conversation.tools)
            except ValueError:
                tools = None
            tools = tools if isinstance(tools, list) else None
        system = conversation.system if tools is not None else system_text(conversation)
        texts = [turn.content for turn in conversation.turns]
        kinds = [turn.role for turn in conversation.turns]
        if system is not None:
            texts.insert(0, system)
            kinds.insert(0, "system")
        return texts, kinds, tools

    def blocks(self, conversation: Conversation, eos_token: str = "</s>") -> list[Block]:
        texts, kinds, tools = self._parts(conversation)
        roles = [_ROLES.get(kind, kind) for kind in kinds]
        placeholders = [_placeholder(index) for index in range(len(texts))]
        marked = [{"role": r, "content": t} for r, t in zip(roles, placeholders, strict=True)]
        real = [{"role": r, "content": t} for r, t in zip(roles, texts, strict=True)]
        fixed = self._split(self._render(marked, tools), placeholders)
        rendered = self._render(real, tools)
        for candidate in (texts, [text.strip() for text in texts]):
            if _joined(fixed, candidate) == rendered:
                return self._blocks(fixed, candidate, kinds)
        raise TemplateRejected(
            "chat_template_changes_text", "the template rewrites a text, not only around it"
        )

    def _split(self, rendered: str, placeholders: list[str]) -> list[str]:
        """The template's text before, between and after the placeholders (each exactly once)."""
        fixed = []
        rest = rendered
        for placeholder in placeholders:
            before, found, after = rest.partition(placeholder)
            if not found or placeholder in after:
                raise TemplateRejected(
                    "chat_template_changes_text", "a text is left out or written twice"
                )
            fixed.append(before)
            rest = after
        fixed.append(rest)
        return fixed

    def _pieces(self, text: str, trainable: bool = False) -> list[Segment]:
        """`text` of the template cut at added tokens: markers and plain text between them."""
        segments = []
        position = 0
        for match in self._added.finditer(text):
            if match.start() > position:
                segments.append(Segment(text[position : match.start()], False, trainable))
            segments.append(Segment(match.group(), True, trainable))
            position = match.end()
        if position < len(text):
            segments.append(Segment(text[position:], False, trainable))
        return segments

    def _closing(self, text: str) -> tuple[int, int]:
        """How much of the template's text after a turn's text closes that turn: its first
        added token, if only whitespace comes before it, and the whitespace after it. Returns
        (end of the token, end of the whitespace); (0, 0) where nothing closes the turn."""
        match = self._added.search(text)
        if match is None or text[: match.start()].strip():
            return 0, 0
        rest = text[match.end() :]
        return match.end(), match.end() + len(rest) - len(rest.lstrip())

    def _blocks(self, fixed: list[str], texts: list[str], kinds: list[str]) -> list[Block]:
        """One block per text: the template's text before it (less what closed the previous
        turn), the text, and what closes it; answers train their text and closing token."""
        blocks = []
        carry = fixed[0]
        for index, (text, kind) in enumerate(zip(texts, kinds, strict=True)):
            answer = kind in ANSWER_ROLES
            after = fixed[index + 1]
            token_end, closing_end = self._closing(after)
            segments = [*self._pieces(carry), Segment(text, False, answer)]
            segments += self._pieces(after[:token_end], trainable=answer)
            segments += self._pieces(after[token_end:closing_end])
            carry = after[closing_end:]
            if index == len(texts) - 1:
                segments += self._pieces(carry)
            blocks.append(Block(kind, tuple(segments)))
        return blocks


def _joined(fixed: list[str], texts: list[str]) -> str:
    parts = [fixed[0]]
    for text, after in zip(texts, fixed[1:], strict=True):
        parts += (text, after)
    return "".join(parts)


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(folder: Path) -> tuple[str | None, dict]:
    """The folder's chat template (`chat_template.jinja`, else `tokenizer_config.json`'s
    `chat_template`, its `default` if it holds several) and the config."""
    config_path = folder / "tokenizer_config.json"
    config = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ConfigError(f"{config_path}: not valid JSON ({error})") from None
    jinja_path = folder / "chat_template.jinja"
    if jinja_path.is_file():
        return jinja_path.read_text(encoding="utf-8"), config
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template}
        template = named.get("default")
    return (template if isinstance(template, str) else None), config


@lru_cache(maxsize=16)
def _auto_template(path: str, added: tuple[str, ...]) -> Template:
    folder = Path(path).parent
    chat_template, config = _chat_template(folder)
    if chat_template is None:
        log.info("%s has no chat template; template auto uses chatml", folder)
        return get_template("chatml")
    variables = {
        name: _token_text(config.get(name))
        for name in ("bos_token", "eos_token", "pad_token", "unk_token")
    }
    return JinjaTemplate(str(folder), chat_template, variables, list(added))


def auto_template(tokenizer) -> Template:
    """The chat template of `tokenizer`'s folder, or `chatml` where it has none."""
    try:
        import jinja2  # noqa: F401
    except ImportError:
        raise ConfigError(
            "template auto renders the tokenizer's Jinja chat template and needs jinja2: "
            "pip install jinja2"
        ) from None
    added = tuple(token.content for token in tokenizer.hf.get_added_tokens_decoder().values())
    return _auto_template(tokenizer.path, added)
