"""One line of a conversation file, read and checked: `{"conversations": [turns]}` becomes
what a chat template takes, or a ValueError saying which turn is wrong and why.

No torch here: the settings' checks read a data file's first line with it before a run starts.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection
from typing import Any

from .jsonl import load_json_line, type_name

ROLES = ("system", "user", "assistant", "tool")
# Which turn may follow which (None: the conversation's start). A system turn only opens it.
_MAY_FOLLOW = {"user": {None, "system", "assistant"}, "assistant": {"user", "tool"},
               "tool": {"assistant", "tool"}, "system": {None}}
# MiniMind's ChatML markers, which open and close every turn its chat template writes. Quoted
# in a turn's text they move the loss mask (a user's words after "<|im_start|>assistant" are
# trained as a reply; a reply stops at "<|im_end|>").
TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"
CHAT_MARKERS = (TURN_START, TURN_END)


def _a(role: str) -> str:
    return f"an {role}" if role == "assistant" else f"a {role}"  # "a user", "a tool"


def _check_text(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type_name(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} holds an unpaired surrogate (\\u{ord(value[e.start]):04x}): "
                         "not valid Unicode text") from None
    _check_no_marker(value, what)


def _check_no_marker(text: str, what: str) -> None:
    if marker := next((m for m in CHAT_MARKERS if m in text), None):
        raise ValueError(f"{what} quotes the chat template's marker {marker}, which would move "
                         "the loss mask: the turns' words would be trained as another role's")


def parse_conversation(raw: bytes) -> dict[str, Any]:
    """One line's `{"messages": [...], "tools": list | None}` for `apply_chat_template`, or
    ValueError saying which turn is wrong and why."""
    obj = load_json_line(raw)
    if not isinstance(obj, dict):
        raise ValueError(f'expected a JSON object with a "conversations" list, got '
                         f"{type_name(obj)}")
    if "conversations" not in obj:
        hint = ' (this looks like pretraining data; use stage "pretrain")' if "text" in obj else ""
        raise ValueError(f'missing "conversations" field{hint}')
    turns = obj["conversations"]
    if not isinstance(turns, list) or not turns:
        raise ValueError('"conversations" must be a non-empty list of turns')
    messages, tools, previous = [], None, None
    for n, turn in enumerate(turns, start=1):
        where = f"turn {n}"
        if not isinstance(turn, dict):
            raise ValueError(f"{where} must be an object with role and content, got "
                             f"{type_name(turn)}")
        for field in ("role", "content"):  # null is a value of the wrong type, said below
            if field not in turn:
                one_of = f" (one of {', '.join(ROLES)})" if field == "role" else ""
                raise ValueError(f'{where}: missing "{field}" field{one_of}')
        role = turn["role"]
        if role not in ROLES:
            got = repr(role) if isinstance(role, str) else type_name(role)
            raise ValueError(f"{where}: role must be one of {', '.join(ROLES)}, got {got}")
        if previous not in _MAY_FOLLOW[role]:
            after = f"after {_a(previous)} turn" if previous else "first"
            raise ValueError(f"{where}: {_a(role)} turn cannot come {after} (turns go [system], "
                             "user, assistant, user, assistant, ...)")
        _check_text(turn["content"], f"{where}: content")
        message = {"role": role, "content": turn["content"]}
        if "reasoning_content" in turn and turn["reasoning_content"] is not None:
            if role != "assistant":
                raise ValueError(f"{where}: only assistant turns have reasoning_content")
            _check_text(turn["reasoning_content"], f"{where}: reasoning_content")
            message["reasoning_content"] = turn["reasoning_content"]
        if turn.get("tool_calls"):
            if role != "assistant":
                raise ValueError(f"{where}: only assistant turns carry tool_calls")
            message["tool_calls"] = _tool_calls(turn["tool_calls"], where)
        if turn.get("tools"):
            if role != "system":
                raise ValueError(f"{where}: only the system turn carries tools")
            tools = _json_list(turn["tools"], f"{where}: tools")
            _check_no_marker(json.dumps(tools, ensure_ascii=False), f"{where}: tools")
        if role == "assistant" and not (message["content"].strip() or message.get(
                "tool_calls") or message.get("reasoning_content", "").strip()):
            raise ValueError(f"{where}: an empty reply (no content, reasoning or tool calls) "
                             "would teach the model to answer with nothing")
        messages.append(message)
        previous = role
    if "assistant" not in (m["role"] for m in messages):
        raise ValueError("no assistant turn: nothing to learn from this conversation")
    return {"messages": messages, "tools": tools}


def _json_list(value: object, what: str) -> list:
    """MiniMind-3 stores tools and tool_calls as a list, or as that list in a JSON string."""
    if isinstance(value, str):
        try:
            value = load_json_line(value.encode())
        except ValueError as e:
            raise ValueError(f"{what} is a string but not JSON ({e})") from None
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list, got {type_name(value)}")
    return value


def _tool_calls(value: object, where: str) -> list:
    """The calls as a template writes them: each {"name", "arguments"}, or those inside a
    "function" object (OpenAI's form). One without them failed in the middle of a run."""
    calls = _json_list(value, f"{where}: tool_calls")
    for n, call in enumerate(calls, start=1):
        what = f"{where}: tool call {n}"
        inner = call.get("function", call) if isinstance(call, dict) else call
        if not isinstance(inner, dict):
            raise ValueError(f'{what} must be an object with "name" and "arguments", got '
                             f"{type_name(inner)}")
        if not isinstance(inner.get("name"), str) or not inner["name"]:
            raise ValueError(f'{what}: "name" must be a non-empty string')
        if "arguments" not in inner:
            raise ValueError(f'{what} has no "arguments" (an object, or a JSON string)')
        _check_no_marker(json.dumps(inner, ensure_ascii=False), what)  # the template writes it
    return calls


class ConversationParser:
    """`parse_conversation` that also counts the conversations carrying each optional field
    (`carrying`): a chat template may leave one out of the text, and then out of training.
    A reply made only of fields it leaves out (`unwritten`) is refused: rendered, it is an
    empty reply, `<|im_end|>` trained as the whole answer."""

    def __init__(self, unwritten: Collection[str] = ()) -> None:
        self.carrying: Counter[str] = Counter()
        self.unwritten = frozenset(unwritten)

    def __call__(self, raw: bytes) -> dict[str, Any]:
        conversation = parse_conversation(raw)
        fields = {"tools"} if conversation["tools"] else set()
        for n, message in enumerate(conversation["messages"], start=1):
            extras = {k for k in ("tool_calls", "reasoning_content") if str(message.get(k) or "")
                      .strip()}
            if message["role"] == "assistant" and extras and extras <= self.unwritten \
                    and not message["content"].strip():
                raise ValueError(f"turn {n}: a reply of {' and '.join(sorted(extras))} alone, "
                                 "which the tokenizer's chat template does not write: it would "
                                 "train as an empty reply (MiniMind-3's tokenizer writes them)")
            fields |= extras
        self.carrying.update(fields)
        return conversation
