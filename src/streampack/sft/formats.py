"""Parsed JSON records → conversations and preference pairs, the format detected per record.

Formats, tried in this order on each record:

- preference pair: `chosen` and `rejected` strings, with the prompt in `conversations`
  (ShareGPT, as MedicalGPT's `reward/dpo_zh_500.jsonl`), `messages` (OpenAI), `prompt` (a
  string) or `question` (with `response_chosen` / `response_rejected` instead of
  `chosen` / `rejected`);
- ShareGPT: `{"conversations": [{"from": ..., "value": ...}, ...]}` (`role` / `content` inside
  the turns are accepted too), an optional top-level `system` and `tools`;
- OpenAI: `{"messages": [{"role": ..., "content": ...}, ...]}`; `content` may be a list of
  `{"type": "text", "text": ...}` parts; an assistant message's `tool_calls` become
  `function_call` turns holding `{"name": ..., "arguments": ...}` as JSON, the shape glaive's
  `function_call` values have;
- Alpaca: `instruction`, optional `input` (appended to the instruction after a line break),
  `output`, optional `history` as `[[question, answer], ...]` before it, optional `system`.

Role names (case-insensitive) and what they become:

| role in the record                                | turn role       |
|---------------------------------------------------|-----------------|
| `system`                                          | the system text |
| `human`, `user`                                   | `user`          |
| `gpt`, `assistant`, `bot`, `model`, `chatgpt`     | `assistant`     |
| `function_call`                                   | `function_call` |
| `observation`, `tool`                             | `tool`          |

The role-order policy, applied in this order; every fix is returned as a named action, every
rejection is a `RecordRejected` with a named reason:

1. system turns before the first other turn become the system text (joined to a top-level
   `system` with "\\n": `merged_system`); a system turn later on rejects the record
   (`misplaced_system_turn`), as does a role not in the table (`unknown_role`);
2. turns whose text is empty or whitespace are dropped (`dropped_empty_turn`, one per turn);
3. consecutive turns of the same role are merged, joined with "\\n"
   (`merged_consecutive_turns`, one per merge);
4. turns before the first user turn are dropped (`dropped_leading_assistant`, or
   `dropped_leading_tool` for a tool result);
5. for SFT, a conversation without an `assistant` or `function_call` turn is rejected
   (`no_assistant_turn`) and the turns after the last one, which nothing would learn from, are
   dropped (`dropped_trailing_turn`); for a preference prompt, the last turn must be the user's
   (`prompt_not_ending_with_user`) and both answers must be non-empty (`empty_answer`).
"""

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import StreampackError
from ..report import Report

log = logging.getLogger(__name__)

ROLE_ALIASES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "function_call": "function_call",
    "observation": "tool",
    "tool": "tool",
}
RECORD_FORMATS = ("sharegpt", "openai", "alpaca")
# Turns a model is trained to produce.
ANSWER_ROLES = ("assistant", "function_call")
_MISSING = object()

# reason -> what is wrong, for messages; the keys are what `Report.skip` counts.
REJECT_REASONS = {
    "unrecognized_record": "no conversations, messages, instruction/output or chosen/rejected",
    "malformed_turn": "a turn that is not an object with a role and a text",
    "non_string_content": "a text that is not a string",
    "unknown_role": "a role that is not in the table of accepted roles",
    "misplaced_system_turn": "a system turn after the conversation started",
    "no_assistant_turn": "no assistant or function_call turn to learn from",
    "prompt_not_ending_with_user": "a preference prompt whose last turn is not the user's",
    "empty_answer": "an empty chosen or rejected answer",
}
FIX_ACTIONS = (
    "merged_system",
    "dropped_empty_turn",
    "merged_consecutive_turns",
    "dropped_leading_assistant",
    "dropped_leading_tool",
    "dropped_trailing_turn",
)


@dataclass(frozen=True)
class Turn:
    """One message: `role` is `user`, `assistant`, `function_call` or `tool`."""

    role: str
    content: str


@dataclass(frozen=True)
class Conversation:
    """A system text (or None), the turns in order, and the tool definitions (JSON) if any."""

    system: str | None
    turns: tuple[Turn, ...]
    tools: str | None = None


@dataclass(frozen=True)
class PreferencePair:
    """A prompt conversation ending with the user's turn, and two answers to it."""

    prompt: Conversation
    chosen: str
    rejected: str


class RecordRejected(StreampackError):
    """A record that cannot be used; `reason` is the name the report counts it under."""

    def __init__(self, reason: str, found: str = "") -> None:
        self.reason = reason
        self.found = found
        super().__init__(f"{REJECT_REASONS.get(reason, reason)} (found {found or 'otherwise'})")


def record_format(record: dict) -> str | None:
    """`sharegpt`, `openai` or `alpaca` by the record's fields (a preference pair's prompt
    included), or None."""
    if "conversations" in record:
        return "sharegpt"
    if "messages" in record:
        return "openai"
    if "instruction" in record and "output" in record:
        return "alpaca"
    return None


def parse_record(
    record, fixed_format: str | None = None
) -> tuple[Conversation | PreferencePair, list[str]]:
    """The conversation or preference pair of one parsed JSON record, and the fixes applied.

    `fixed_format` (one of `RECORD_FORMATS`) rejects a record of any other format as
    `unrecognized_record` instead of detecting it. Raises `RecordRejected` for a record that
    cannot be used.
    """
    if not isinstance(record, dict):
        raise RecordRejected("unrecognized_record", type(record).__name__)
    if fixed_format is not None and record_format(record) != fixed_format:
        fields = ", ".join(sorted(record)[:8])
        raise RecordRejected("unrecognized_record", f"not {fixed_format}: fields {fields}")
    actions: list[str] = []
    if _is_preference(record):
        return _preference(record, actions), actions
    if "conversations" in record:
        turns = _turn_list(record["conversations"], "from", "value")
    elif "messages" in record:
        turns = _openai_turns(record["messages"])
    elif "instruction" in record and "output" in record:
        turns = _alpaca_turns(record)
    else:
        raise RecordRejected("unrecognized_record", f"fields {', '.join(sorted(record))}")
    system = _optional_text(record, "system")
    conversation = _apply_policy(turns, system, _tools(record), actions, prompt_only=False)
    return conversation, actions


def parse_records(
    records: Iterable[tuple[int, object]],
    path: str,
    report: Report,
    kind: str = "sft",
    fixed_format: str | None = None,
) -> Iterator[tuple[int, Conversation | PreferencePair]]:
    """Parse `(line, record)` pairs of one file; rejected records go to `report.skip`.

    `kind` is `sft` (conversations) or `preference` (pairs); a record of the other kind is
    rejected as `unrecognized_record`, as is one not of `fixed_format` when that is given.
    The fixes applied to kept records are counted in `report.values["sft_fixes"]` (action ->
    records).
    """
    wanted = Conversation if kind == "sft" else PreferencePair
    fixes = report.values.setdefault("sft_fixes", {})
    for line, record in records:
        try:
            item, actions = parse_record(record, fixed_format)
        except RecordRejected as rejected:
            report.skip(rejected.reason, path, line, found=rejected.found)
            continue
        if not isinstance(item, wanted):
            report.skip("unrecognized_record", path, line, found=f"a record that is not {kind}")
            continue
        for action in actions:
            fixes[action] = fixes.get(action, 0) + 1
        yield line, item


def _is_preference(record: dict) -> bool:
    return ("chosen" in record and "rejected" in record) or (
        "response_chosen" in record and "response_rejected" in record
    )


def _preference(record: dict, actions: list[str]) -> PreferencePair:
    chosen = record.get("chosen", record.get("response_chosen"))
    rejected = record.get("rejected", record.get("response_rejected"))
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str):
            raise RecordRejected("non_string_content", f"{name} of type {type(value).__name__}")
        if not value.strip():
            raise RecordRejected("empty_answer", f"an empty {name}")
    if "conversations" in record:
        turns = _turn_list(record["conversations"], "from", "value")
    elif "messages" in record:
        turns = _openai_turns(record["messages"])
    else:
        field = "prompt" if "prompt" in record else "question"
        text = record.get(field)
        if not isinstance(text, str):
            raise RecordRejected("non_string_content", f"{field} of type {type(text).__name__}")
        turns = [("user", text)]
    system = _optional_text(record, "system")
    prompt = _apply_policy(turns, system, _tools(record), actions, prompt_only=True)
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected)


def _role(name) -> str:
    if not isinstance(name, str):
        raise RecordRejected("unknown_role", repr(name))
    role = ROLE_ALIASES.get(name) or ROLE_ALIASES.get(name.strip().lower())
    if role is None:
        raise RecordRejected("unknown_role", repr(name))
    return role


def _turn_list(value, role_key: str, text_key: str) -> list[tuple[str, str]]:
    """(role, text) pairs from a list of turn objects; `role`/`content` keys are accepted too."""
    if not isinstance(value, list):
        raise RecordRejected("malformed_turn", f"turns of type {type(value).__name__}")
    turns = []
    for turn in value:
        if not isinstance(turn, dict):
            raise RecordRejected("malformed_turn", f"a turn of type {type(turn).__name__}")
        role = turn.get(role_key, _MISSING)
        if role is _MISSING:
            role = turn.get("role", _MISSING)
        text = turn.get(text_key, _MISSING)
        if text is _MISSING:
            text = turn.get("content", _MISSING)
        if role is _MISSING or text is _MISSING:
            raise RecordRejected("malformed_turn", f"a turn with fields {', '.join(turn)}")
        if not isinstance(text, str):
            raise RecordRejected("non_string_content", f"a text of type {type(text).__name__}")
        turns.append((_role(role), text))
    return turns


def _openai_turns(messages) -> list[tuple[str, str]]:
    if not isinstance(messages, list):
        raise RecordRejected("malformed_turn", f"messages of type {type(messages).__name__}")
    turns = []
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise RecordRejected("malformed_turn", f"a message {str(message)[:60]!r}")
        role = _role(message["role"])
        content = message.get("content")
        calls = message.get("tool_calls") if role == "assistant" else None
        if isinstance(content, list):
            content = _text_parts(content)
        if content is None and calls:
            content = ""
        if not isinstance(content, str):
            raise RecordRejected("non_string_content", f"content of type {type(content).__name__}")
        if content or not calls:
            turns.append((role, content))
        if calls:
            turns.append(("function_call", _tool_calls(calls)))
    return turns


def _text_parts(parts: list) -> str:
    texts = []
    for part in parts:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise RecordRejected("non_string_content", f"a content part {str(part)[:60]!r}")
        texts.append(part.get("text", ""))
    return "".join(texts)


def _tool_calls(calls) -> str:
    """Each call as glaive's `{"name": ..., "arguments": {...}}`, one per line."""
    if not isinstance(calls, list):
        raise RecordRejected("malformed_turn", f"tool_calls of type {type(calls).__name__}")
    lines = []
    for call in calls:
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict) or "name" not in function:
            raise RecordRejected("malformed_turn", f"a tool call {str(call)[:60]!r}")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            # OpenAI sends arguments as a JSON string; glaive's turns hold the object itself.
            with contextlib.suppress(ValueError):
                arguments = json.loads(arguments)
        lines.append(
            json.dumps({"name": function["name"], "arguments": arguments}, ensure_ascii=False)
        )
    return "\n".join(lines)


def _alpaca_turns(record: dict) -> list[tuple[str, str]]:
    turns = []
    history = record.get("history") or []
    if not isinstance(history, list):
        raise RecordRejected("malformed_turn", f"history of type {type(history).__name__}")
    for pair in history:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise RecordRejected("malformed_turn", f"a history entry {str(pair)[:60]!r}")
        for role, text in zip(("user", "assistant"), pair, strict=True):
            if not isinstance(text, str):
                raise RecordRejected("non_string_content", f"history text {type(text).__name__}")
            turns.append((role, text))
    instruction = record["instruction"]
    extra = record.get("input") or ""
    output = record["output"]
    for name, value in (("instruction", instruction), ("input", extra), ("output", output)):
        if not isinstance(value, str):
            raise RecordRejected("non_string_content", f"{name} of type {type(value).__name__}")
    turns.append(("user", f"{instruction}\n{extra}" if extra.strip() else instruction))
    turns.append(("assistant", output))
    return turns


def _optional_text(record: dict, field: str) -> str | None:
    value = record.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordRejected("non_string_content", f"{field} of type {type(value).__name__}")
    return value if value.strip() else None


def _tools(record: dict) -> str | None:
    tools = record.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, str):
        tools = json.dumps(tools, ensure_ascii=False)
    return None if tools.strip() in ("", "[]") else tools


def _apply_policy(
    turns: list[tuple[str, str]],
    system: str | None,
    tools: str | None,
    actions: list[str],
    *,
    prompt_only: bool,
) -> Conversation:
    """The role-order policy of the module docstring, steps 1 to 5."""
    systems = [system] if system else []
    start = 0
    while start < len(turns) and turns[start][0] == "system":
        if turns[start][1].strip():
            systems.append(turns[start][1])
        start += 1
    if len(systems) > 1:
        actions.append("merged_system")
    roles: list[str] = []
    texts: list[str] = []
    for index in range(start, len(turns)):
        role, text = turns[index]
        if role == "system":
            raise RecordRejected("misplaced_system_turn", f"turn {index + 1}")
        if not text or text.isspace():
            actions.append("dropped_empty_turn")
        elif roles and roles[-1] == role:
            texts[-1] = f"{texts[-1]}\n{text}"
            actions.append("merged_consecutive_turns")
        else:
            roles.append(role)
            texts.append(text)
    while roles and roles[0] != "user":
        role = roles.pop(0)
        texts.pop(0)
        actions.append("dropped_leading_tool" if role == "tool" else "dropped_leading_assistant")

    if prompt_only:
        if not roles or roles[-1] != "user":
            raise RecordRejected("prompt_not_ending_with_user", roles[-1] if roles else "no turn")
    else:
        if not any(role in ANSWER_ROLES for role in roles):
            raise RecordRejected("no_assistant_turn", f"roles {roles}")
        while roles[-1] not in ANSWER_ROLES:
            roles.pop()
            texts.pop()
            actions.append("dropped_trailing_turn")
    return Conversation(
        system="\n".join(systems) if systems else None,
        turns=tuple(map(Turn, roles, texts)),
        tools=tools,
    )
