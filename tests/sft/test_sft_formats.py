"""Records of each input format → conversations, and the role-order policy's named actions."""

import json
from collections import Counter
from pathlib import Path

import pytest

from streampack.errors import DataError
from streampack.report import Report
from streampack.sft import (
    Conversation,
    PreferencePair,
    RecordRejected,
    Turn,
    parse_record,
    parse_records,
)

MEDICALGPT = Path(__file__).resolve().parents[2].parent / "shared/data/medicalgpt"


def _real(name: str) -> Path:
    path = MEDICALGPT / name
    if not path.is_file():
        pytest.skip(f"the real MedicalGPT sample is not at {path}")
    return path


def _lines(path: Path):
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            yield number, json.loads(line)


def test_sharegpt_every_alias():
    aliases = [("human", "gpt"), ("user", "assistant"), ("user", "bot"), ("user", "model")]
    aliases += [("HUMAN", "chatgpt")]
    for user, assistant in aliases:
        record = {
            "system": "be brief",
            "conversations": [{"from": user, "value": "q"}, {"from": assistant, "value": "a"}],
        }
        conversation, actions = parse_record(record)
        assert conversation == Conversation("be brief", (Turn("user", "q"), Turn("assistant", "a")))
        assert actions == []


def test_sharegpt_system_turn_and_role_content_keys():
    record = {
        "conversations": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
        ]
    }
    conversation, actions = parse_record(record)
    assert conversation.system == "sys" and conversation.turns[0] == Turn("user", "q")
    assert actions == []


def test_openai_messages_with_parts_and_tool_calls():
    record = {
        "messages": [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "weather "},
                    {"type": "text", "text": "in Oslo?"},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"temp": 3}'},
            {"role": "assistant", "content": "3 degrees"},
        ],
        "tools": [{"name": "get_weather"}],
    }
    conversation, actions = parse_record(record)
    assert [turn.role for turn in conversation.turns] == [
        "user",
        "function_call",
        "tool",
        "assistant",
    ]
    assert conversation.turns[0].content == "weather in Oslo?"
    assert json.loads(conversation.turns[1].content) == {
        "name": "get_weather",
        "arguments": {"city": "Oslo"},
    }
    assert json.loads(conversation.tools) == [{"name": "get_weather"}]
    assert actions == []


def test_alpaca_with_input_history_and_system():
    record = {
        "system": "you are a doctor",
        "history": [["first q", "first a"], ["second q", "second a"]],
        "instruction": "diagnose",
        "input": "fever and cough",
        "output": "likely a cold",
    }
    conversation, _ = parse_record(record)
    assert conversation.system == "you are a doctor"
    assert conversation.turns == (
        Turn("user", "first q"),
        Turn("assistant", "first a"),
        Turn("user", "second q"),
        Turn("assistant", "second a"),
        Turn("user", "diagnose\nfever and cough"),
        Turn("assistant", "likely a cold"),
    )
    plain, _ = parse_record({"instruction": "say hi", "input": "", "output": "hi"})
    assert plain.turns == (Turn("user", "say hi"), Turn("assistant", "hi")) and plain.system is None


def _conversation(*pairs):
    return {"conversations": [{"from": role, "value": value} for role, value in pairs]}


def test_policy_merge_drop_and_trailing_with_named_actions():
    record = _conversation(
        ("gpt", "hello, I am a bot"),  # leading assistant: dropped
        ("human", "part one"),
        ("human", "part two"),  # merged into the turn before
        ("gpt", "   "),  # empty: dropped, so the next human turn merges too
        ("human", "part three"),
        ("gpt", "the answer"),
        ("human", "thanks"),  # after the last answer: dropped
    )
    conversation, actions = parse_record(record)
    assert conversation.turns == (
        Turn("user", "part one\npart two\npart three"),
        Turn("assistant", "the answer"),
    )
    assert Counter(actions) == {
        "dropped_leading_assistant": 1,
        "merged_consecutive_turns": 2,
        "dropped_empty_turn": 1,
        "dropped_trailing_turn": 1,
    }


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_conversation(("human", "q"), ("wizard", "a")), "unknown_role"),
        (_conversation(("human", "q"), ("human", "again")), "no_assistant_turn"),
        (_conversation(("gpt", "only an answer")), "no_assistant_turn"),
        (_conversation(("human", "q"), ("system", "late"), ("gpt", "a")), "misplaced_system_turn"),
        ({"conversations": [{"from": "human", "value": 3}]}, "non_string_content"),
        ({"conversations": [{"from": "human"}]}, "malformed_turn"),
        ({"text": "pretraining text"}, "unrecognized_record"),
        ([1, 2], "unrecognized_record"),
    ],
)
def test_rejections_are_named(record, reason):
    with pytest.raises(RecordRejected) as caught:
        parse_record(record)
    assert caught.value.reason == reason


def test_parse_records_counts_rejections_and_fixes_in_the_report():
    records = [
        (1, _conversation(("human", "q"), ("gpt", "a"))),
        (2, _conversation(("human", "q"), ("wizard", "a"))),
        (3, _conversation(("human", "q"), ("human", "q2"), ("gpt", "a"))),
        (4, {"text": "x"}),
    ]
    report = Report()
    kept = list(parse_records(records, "chat.jsonl", report))
    assert [line for line, _ in kept] == [1, 3]
    result = report.as_dict()
    assert result["skipped"]["unknown_role"] == {"count": 1, "first": ["chat.jsonl:2"]}
    assert result["skipped"]["unrecognized_record"]["first"] == ["chat.jsonl:4"]
    assert result["sft_fixes"] == {"merged_consecutive_turns": 1}
    with pytest.raises(DataError, match=r"chat.jsonl:2: unknown role"):
        list(parse_records(records, "chat.jsonl", Report(on_error="raise")))


def test_a_fixed_format_rejects_records_of_other_formats():
    records = [
        (1, _conversation(("human", "q"), ("gpt", "a"))),
        (
            2,
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        ),
        (3, {"instruction": "q", "output": "a"}),
    ]
    for fixed, line in (("sharegpt", 1), ("openai", 2), ("alpaca", 3)):
        report = Report()
        kept = list(parse_records(records, "chat.jsonl", report, fixed_format=fixed))
        assert [number for number, _ in kept] == [line]
        assert report.as_dict()["skipped"]["unrecognized_record"]["count"] == 2
    with pytest.raises(RecordRejected, match="not openai: fields conversations"):
        parse_record(records[0][1], "openai")


def test_preference_forms():
    pair, _ = parse_record({"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert pair == PreferencePair(Conversation(None, (Turn("user", "q"),)), "good", "bad")
    pair, _ = parse_record({"question": "q", "response_chosen": "g", "response_rejected": "b"})
    assert pair.chosen == "g" and pair.prompt.turns == (Turn("user", "q"),)
    for record, reason in [
        ({"prompt": "q", "chosen": " ", "rejected": "bad"}, "empty_answer"),
        (
            {**_conversation(("human", "q"), ("gpt", "a")), "chosen": "g", "rejected": "b"},
            "prompt_not_ending_with_user",
        ),
    ]:
        with pytest.raises(RecordRejected) as caught:
            parse_record(record)
        assert caught.value.reason == reason


def test_real_glaive_tool_calls():
    path = _real("sft/glaive_toolcall_zh_demo.jsonl")
    report = Report()
    kept = list(parse_records(_lines(path), str(path), report))
    assert len(kept) + report.skipped_total == 300
    assert report.skipped_total == 0
    roles = Counter(turn.role for _, conv in kept for turn in conv.turns)
    # The file holds 216 function_call and 218 observation turns (counted from the raw file).
    assert roles["function_call"] == 216 and roles["tool"] == 218
    # 200 records define tools (157 of them call one); 100 have `"tools": "[]"`, kept as None.
    assert sum(conv.tools is not None for _, conv in kept) == 200
    calls = [conv for _, conv in kept if any(t.role == "function_call" for t in conv.turns)]
    assert len(calls) == 157 and all(conv.tools for conv in calls)
    first = kept[0][1]
    assert [turn.role for turn in first.turns] == ["user", "function_call", "tool", "assistant"]
    assert json.loads(first.turns[1].content)["name"] == "generate_invoice"
    assert json.loads(first.tools)[0]["name"] == "generate_invoice"


def test_real_dpo_preference_pairs():
    path = _real("reward/dpo_zh_500.jsonl")
    report = Report()
    kept = list(parse_records(_lines(path), str(path), report, kind="preference"))
    assert len(kept) == 500 and report.skipped_total == 0
    pairs = [pair for _, pair in kept]
    # 84 records open with a system turn (counted from the raw file).
    assert sum(pair.prompt.system is not None for pair in pairs) == 84
    assert all(
        pair.prompt.turns[-1].role == "user" and pair.chosen != pair.rejected for pair in pairs
    )
    raw = json.loads(path.open(encoding="utf-8").readline())
    assert (
        pairs[0].chosen == raw["chosen"]
        and pairs[0].prompt.turns[0].content == raw["conversations"][0]["value"]
    )
