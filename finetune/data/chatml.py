"""The one place that knows how LLaMA-Factory (0.9.5) reads our ChatML JSONL.

Our data format: one JSON object per line, ``{"messages": [{"role": ..., "content": ...}, ...]}``,
optionally with a ``tools`` column (a JSON string describing the tools). It is registered in
``dataset_info.json`` as ``formatting: sharegpt`` with the FULL tag map (:func:`dataset_entry`):
leaving out ``system_tag`` would silently drop every conversation that starts with a system
message, and leaving out ``observation_tag`` / ``function_tag`` would make LLaMA-Factory accept a
message without a role (its tags become None and ``None`` then matches a missing role).

How LLaMA-Factory's ``SharegptDatasetConverter`` + ``SupervisedDatasetProcessor`` treat one
conversation (read from ``llamafactory/data/converter.py`` and ``processor/supervised.py``):

1. If the first message has role ``system`` it becomes the system prompt and is removed.
2. The remaining turns must alternate: even positions ``user`` or ``observation``, odd positions
   ``assistant`` or ``function_call``. A mismatch drops the conversation.
3. An odd number of remaining turns (ends on a user / observation turn) drops it.
4. Nothing left (empty, or only a system message) drops it.

Dropped conversations only produce a warning in the training log. Other faults make the whole
load or the whole run fail (see :mod:`finetune.data.check`): invalid JSON, a line that is not an
object, fields whose JSON type differs between lines, ``messages`` missing, non-string content in
a turn the template renders, a ``function_call`` whose content is not a JSON tool call.

:func:`classify` applies rules 1-4 (plus the content rules) to one parsed record; it is pure and
fast (the checker calls it 100k times a second).
"""

from __future__ import annotations

from typing import Any

# Roles and the tag map ---------------------------------------------------------------------------
SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
FUNCTION, OBSERVATION = "function_call", "observation"
ROLES = (SYSTEM, USER, ASSISTANT, FUNCTION, OBSERVATION)
MESSAGES_COLUMN, TOOLS_COLUMN = "messages", "tools"
ROLE_KEY, CONTENT_KEY = "role", "content"
KNOWN_TOP_KEYS = frozenset({MESSAGES_COLUMN, TOOLS_COLUMN, "provenance"})  # provenance: ours, LF ignores it
KNOWN_MESSAGE_KEYS = frozenset({ROLE_KEY, CONTENT_KEY})

TAGS = {
    "role_tag": ROLE_KEY,
    "content_tag": CONTENT_KEY,
    "user_tag": USER,
    "assistant_tag": ASSISTANT,
    "observation_tag": OBSERVATION,
    "function_tag": FUNCTION,
    "system_tag": SYSTEM,
}

# Turns allowed at even / odd positions after the optional leading system message.
_EVEN = frozenset({USER, OBSERVATION})
_ODD = frozenset({ASSISTANT, FUNCTION})
_ACCEPT = (_EVEN, _ODD)

# Extensions LLaMA-Factory's file loader accepts (extras/constants.py FILEEXT2TYPE) that we write.
CHATML_EXTENSIONS = (".jsonl", ".json")


def dataset_entry(file_name: str, has_tools: bool = False) -> dict:
    """The ``dataset_info.json`` entry for one ChatML file (``file_name`` relative to the data dir)."""
    columns = {"messages": MESSAGES_COLUMN}
    if has_tools:
        columns["tools"] = TOOLS_COLUMN
    return {"file_name": file_name, "formatting": "sharegpt", "columns": columns, "tags": dict(TAGS)}


# Drop codes (severity error: LLaMA-Factory drops the conversation) ------------------------------
EMPTY = "empty"
SYSTEM_NOT_FIRST = "system-not-first"
ROLE_ORDER = "role-order"
UNKNOWN_ROLE = "unknown-role"
ODD_TURNS = "ends-on-user"
# Fail codes (severity error: LLaMA-Factory fails the whole run when it meets the record)
CONTENT_NOT_STRING = "content-not-string"
BAD_FUNCTION_CALL = "function-call-not-json"

FIXES = {
    EMPTY: "add at least one user turn followed by an assistant turn, or delete the line",
    SYSTEM_NOT_FIRST: "move the system message to the start of the conversation (only one is allowed)",
    ROLE_ORDER: "make turns alternate user, assistant, user, assistant ... after the optional system message",
    UNKNOWN_ROLE: f"use one of the roles {', '.join(ROLES)}",
    ODD_TURNS: "end the conversation with an assistant turn (add the answer or delete the last user turn)",
    CONTENT_NOT_STRING: "make every message's content a string",
    BAD_FUNCTION_CALL: 'write function_call content as JSON: {"name": ..., "arguments": {...}}',
}


def _role_problem(role: Any, expected: frozenset) -> str:
    if role == SYSTEM:
        return SYSTEM_NOT_FIRST
    if role not in ROLES:
        return UNKNOWN_ROLE
    return ROLE_ORDER


def _valid_function_call(content: str) -> bool:
    """LLaMA-Factory's FunctionFormatter: JSON object or list of objects with name + arguments."""
    import json

    try:
        calls = json.loads(content)
    except (ValueError, RecursionError):
        return False
    calls = calls if isinstance(calls, list) else [calls]
    try:
        for call in calls:
            call["name"], call["arguments"]  # noqa: B018 - KeyError / TypeError mean invalid
    except (KeyError, TypeError, IndexError):
        return False
    return True


_KINDS = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}


def _what(msg: dict, key: str) -> str:
    """``null`` (given as null), ``missing`` (no such key) or the JSON kind of ``msg[key]``."""
    if key not in msg:
        return f"missing (no {key!r} key)"
    value = msg[key]
    return "null" if value is None else _KINDS.get(type(value), type(value).__name__)


def classify(messages: list) -> tuple[str, str, int] | None:
    """Why LLaMA-Factory would drop (or die on) this conversation, or ``None`` when it keeps it.

    ``messages`` is the parsed ``messages`` list (its items are expected to be dicts; use
    :func:`finetune.data.check` for structure). Returns ``(code, message, turn_index)`` where
    ``turn_index`` is the 0-based index in ``messages`` of the offending turn (-1 for the whole).
    """
    start = 0
    if messages and messages[0].get(ROLE_KEY) == SYSTEM:
        start = 1
    n = len(messages) - start
    if n == 0:
        what = "only a system message" if start else "no messages"
        return EMPTY, f"conversation is empty ({what}); LLaMA-Factory drops it", -1
    for i in range(n):
        msg = messages[start + i]
        role = msg.get(ROLE_KEY)
        expected = _ACCEPT[i % 2]
        if role not in expected:
            code = _role_problem(role, expected)
            want = "user" if i % 2 == 0 else "assistant"
            has = f"role {role!r}" if role is not None else (
                "role null" if ROLE_KEY in msg else f"no {ROLE_KEY!r} key")
            return (code, f"turn {start + i + 1} has {has} where {want!r} must come; "
                    "LLaMA-Factory drops the conversation", start + i)
    if n % 2:
        last = messages[-1].get(ROLE_KEY)
        return ODD_TURNS, (f"conversation ends on a {last!r} turn ({n} turns after the system message); "
                           "LLaMA-Factory drops it"), len(messages) - 1
    # Kept by the converter: the template now renders every turn and dies on non-strings.
    if start and messages[0].get(CONTENT_KEY) is not None and not isinstance(messages[0].get(CONTENT_KEY), str):
        return CONTENT_NOT_STRING, "system content is not a string; LLaMA-Factory's template fails on it", 0
    for i in range(start, len(messages)):
        msg = messages[i]
        content = msg.get(CONTENT_KEY)
        if not isinstance(content, str):
            kind = _what(msg, CONTENT_KEY)
            return (CONTENT_NOT_STRING, f"turn {i + 1} content is {kind}; LLaMA-Factory's template fails on it "
                    "and the whole run stops", i)
        if msg.get(ROLE_KEY) == FUNCTION and not _valid_function_call(content):
            return (BAD_FUNCTION_CALL, f"turn {i + 1} (function_call) is not a JSON tool call; "
                    "LLaMA-Factory's template fails on it and the whole run stops", i)
    return None
