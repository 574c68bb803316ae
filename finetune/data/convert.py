"""Raw data -> our ChatML JSONL (``{"messages": [{"role", "content"}, ...]}``, optional ``tools``).

Inputs (``fmt="auto"`` looks at the extension and the first record):

* ``alpaca``: instruction / input / output / system / history (JSON array or JSONL). The user turn
  is ``instruction + "\\n" + input`` exactly as LLaMA-Factory's alpaca converter builds it.
* ``sharegpt``: ``conversations`` of ``from`` / ``value`` (human, gpt, system, function_call,
  observation; also user / assistant), an optional ``system`` and ``tools`` column.
* ``openai``: ``messages`` with ``content`` a string or a list of ``{"type": "text", "text"}``
  parts; ``tool`` turns become ``observation``, assistant ``tool_calls`` become ``function_call``.
* ``csv`` / ``tsv``: one question / answer pair per row (``question_col``, ``answer_col``, optional
  ``system_col``).

JSONL and CSV are streamed; a JSON array is parsed whole (orjson). Every converted conversation is
judged with :func:`finetune.data.chatml.classify`; what cannot be converted or would be dropped by
LLaMA-Factory goes to ``<name>.rejects.jsonl`` with its line (record number for JSON arrays) and
the reason. Nothing is lost silently. Output and rejects are written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from finetune import fileio
from finetune.data import chatml
from finetune.data.names import data_folder, dataset_name, input_file
from finetune.errors import UserError
from finetune.layout import Layout

FORMATS = ("auto", "alpaca", "sharegpt", "openai", "csv", "tsv")

_SHAREGPT_ROLES = {
    "human": chatml.USER, "user": chatml.USER, "gpt": chatml.ASSISTANT, "assistant": chatml.ASSISTANT,
    "system": chatml.SYSTEM, "function_call": chatml.FUNCTION, "observation": chatml.OBSERVATION,
}


class Reject(Exception):
    """This record cannot be converted (the message is the reason)."""


@dataclass
class ConvertResult:
    out_path: Path
    written: int
    rejected: int
    rejects_path: Path | None
    fmt: str = ""
    replaced: list[str] = field(default_factory=list)  # files that existed and were replaced (--force)
    unchanged: bool = False  # the output existed with exactly this content: nothing written
    removed_rejects: str | None = None  # a stale rejects file of an earlier run, removed

    def to_dict(self) -> dict:
        return {"out_path": str(self.out_path), "written": self.written, "rejected": self.rejected,
                "rejects_path": str(self.rejects_path) if self.rejects_path else None, "format": self.fmt,
                "replaced": self.replaced, "unchanged": self.unchanged, "removed_rejects": self.removed_rejects}


# Reading ----------------------------------------------------------------------------------------
def _json_records(src: Path) -> Iterator[tuple[int, object]]:
    """(line or record number, parsed record or Reject) from a JSON array or JSONL file."""
    with src.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        try:
            data = orjson.loads(src.read_bytes().lstrip(b"\xef\xbb\xbf"))
        except orjson.JSONDecodeError as err:
            raise UserError(f"{src.name} is not valid JSON ({err})", where=str(src),
                            fix="repair the file, or save it as JSONL (one object per line)") from None
        yield from enumerate(data, 1)
        return
    with src.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1:
                raw = raw.lstrip(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                yield lineno, orjson.loads(raw)
            except orjson.JSONDecodeError as err:
                yield lineno, Reject(f"invalid JSON or UTF-8: {err}")


CSV_FIELD_LIMIT = 2**31 - 1  # Python's default (128 KiB) would abort a file with one long answer


def _csv_records(src: Path, delimiter: str) -> Iterator[tuple[int, object]]:
    previous = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        with src.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            try:
                for row in reader:
                    yield reader.line_num, row
            except (csv.Error, UnicodeDecodeError) as err:
                kind = "TSV" if delimiter == "\t" else "CSV"
                raise UserError(f"cannot read {src.name} as {kind}: {err}", where=f"{src}:{reader.line_num}",
                                fix="save it as UTF-8 CSV with a header row") from None
    finally:
        csv.field_size_limit(previous)


def detect_format(src: Path) -> str:
    ext = src.suffix.lower()
    if ext in (".csv", ".tsv"):
        return ext[1:]
    for _line, rec in _json_records(src):
        if isinstance(rec, dict):
            if "messages" in rec:
                return "openai"
            if "conversations" in rec:
                return "sharegpt"
            if "instruction" in rec or "output" in rec:
                return "alpaca"
        break
    raise UserError(f"cannot tell the format of {src.name}", where=str(src),
                    fix="pass --fmt alpaca|sharegpt|openai|csv|tsv")


# Record converters ------------------------------------------------------------------------------
def _str(value, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Reject(f"{what} is a {type(value).__name__}, not a string")
    return value


def from_alpaca(rec: dict) -> dict:
    if not isinstance(rec, dict):
        raise Reject("record is not a JSON object")
    msgs = []
    system = _str(rec.get("system"), "system")
    if system:
        msgs.append({"role": chatml.SYSTEM, "content": system})
    history = rec.get("history") or []
    if not isinstance(history, list):
        raise Reject("history is not a list of [question, answer] pairs")
    for pair in history:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise Reject("history item is not a [question, answer] pair of strings")
        msgs += [{"role": chatml.USER, "content": pair[0]}, {"role": chatml.ASSISTANT, "content": pair[1]}]
    query = [q for q in (_str(rec.get("instruction"), "instruction"), _str(rec.get("input"), "input")) if q]
    output = _str(rec.get("output"), "output")
    if not query:
        raise Reject("instruction and input are both empty")
    if not output:
        raise Reject("output is empty or missing")
    msgs += [{"role": chatml.USER, "content": "\n".join(query)}, {"role": chatml.ASSISTANT, "content": output}]
    return {"messages": msgs}


def _tools(rec: dict) -> str | None:
    tools = rec.get("tools")
    if tools in (None, "", []):
        return None
    return tools if isinstance(tools, str) else orjson.dumps(tools).decode()


def from_sharegpt(rec: dict) -> dict:
    if not isinstance(rec, dict):
        raise Reject("record is not a JSON object")
    conv = rec.get("conversations")
    if not isinstance(conv, list):
        raise Reject('"conversations" is missing or not a list')
    msgs = []
    system = _str(rec.get("system"), "system")
    if system:
        msgs.append({"role": chatml.SYSTEM, "content": system})
    for i, turn in enumerate(conv, 1):
        if not isinstance(turn, dict):
            raise Reject(f"turn {i} is not an object")
        role = _SHAREGPT_ROLES.get(turn.get("from")) if isinstance(turn.get("from"), str) else None
        if role is None:
            raise Reject(f"turn {i} has unknown 'from' {turn.get('from')!r}")
        msgs.append({"role": role, "content": _str(turn.get("value"), f"turn {i} value")})
    out: dict = {"messages": msgs}
    tools = _tools(rec)
    if tools:
        out["tools"] = tools
    return out


def _openai_content(content, i: int) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise Reject(f"message {i} has a {kind!r} part; only text is converted")
        return "".join(texts)
    raise Reject(f"message {i} content is a {type(content).__name__}")


def _kind(value) -> str:
    if value is None:
        return "null"
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


_TOOL_CALL_SHAPE = '[{"type": "function", "function": {"name": "...", "arguments": "{...}"}}]'


def _tool_calls(tool_calls, i: int) -> str:
    """OpenAI ``tool_calls`` -> LLaMA-Factory's function_call content (a JSON list of name + arguments)."""
    if not isinstance(tool_calls, list):
        raise Reject(f"message {i} tool_calls is {_kind(tool_calls)}, not a list like {_TOOL_CALL_SHAPE}")
    calls = []
    for j, call in enumerate(tool_calls, 1):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise Reject(f"message {i} tool call {j} is {_kind(call)} without a \"function\" object "
                         f"(expected {_TOOL_CALL_SHAPE})")
        name = fn.get("name")
        if not isinstance(name, str) or not name.strip():
            raise Reject(f"message {i} tool call {j} function name is {_kind(name)}, not a non-empty string")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = orjson.loads(args) if args.strip() else {}
            except orjson.JSONDecodeError:
                raise Reject(f"message {i} tool call {j} arguments are not JSON") from None
        if not isinstance(args, dict):
            raise Reject(f"message {i} tool call {j} arguments are {_kind(args)}, not a JSON object")
        calls.append({"name": name, "arguments": args})
    return orjson.dumps(calls).decode()


def from_openai(rec: dict) -> dict:
    if not isinstance(rec, dict):
        raise Reject("record is not a JSON object")
    src = rec.get("messages")
    if not isinstance(src, list):
        raise Reject('"messages" is missing or not a list')
    msgs = []
    for i, m in enumerate(src, 1):
        if not isinstance(m, dict):
            raise Reject(f"message {i} is not an object")
        role = m.get("role")
        if not isinstance(role, str):
            raise Reject(f"message {i} role is {_kind(role)}, not a string")
        tool_calls = m.get("tool_calls")
        if role == "assistant" and tool_calls is not None and tool_calls != []:
            msgs.append({"role": chatml.FUNCTION, "content": _tool_calls(tool_calls, i)})
            continue
        if role == "tool":
            role = chatml.OBSERVATION
        elif role == "developer":
            role = chatml.SYSTEM
        if role not in chatml.ROLES:
            raise Reject(f"message {i} has unknown role {role!r}")
        msgs.append({"role": role, "content": _openai_content(m.get("content"), i)})
    out: dict = {"messages": msgs}
    tools = _tools(rec)
    if tools:
        out["tools"] = tools
    return out


def _from_row(question_col: str, answer_col: str, system_col: str | None):
    def convert(row: dict) -> dict:
        missing = [c for c in (question_col, answer_col) if c not in row]
        if missing:
            raise UserError(f"column(s) {missing} not in the header {list(row)}",
                            fix="pass --question-col / --answer-col with your column names")
        q, a = (row.get(question_col) or "").strip(), (row.get(answer_col) or "").strip()
        if not q or not a:
            raise Reject(f"empty {question_col if not q else answer_col}")
        msgs = []
        if system_col and (row.get(system_col) or "").strip():
            msgs.append({"role": chatml.SYSTEM, "content": row[system_col].strip()})
        msgs += [{"role": chatml.USER, "content": q}, {"role": chatml.ASSISTANT, "content": a}]
        return {"messages": msgs}
    return convert


# Driver -----------------------------------------------------------------------------------------
def _count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
    return n


def _is_same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def convert_file(src: str | Path, layout: Layout, fmt: str = "auto", name: str | None = None,
                 question_col: str = "question", answer_col: str = "answer", system_col: str | None = "system",
                 out_dir: Path | None = None, force: bool = False) -> ConvertResult:
    """Convert ``src`` into ``<data dir>/<name>.jsonl`` (+ ``<name>.rejects.jsonl`` when needed).

    An existing ``<name>.jsonl`` with other content is replaced only with ``force`` (the same
    content again changes nothing); the source itself is never overwritten; two converts to one
    name at the same moment are serialised by a lock on the output.
    """
    src = input_file(Path(src).expanduser(), "a raw data file (json, jsonl, csv, tsv)")
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    if name:
        name = dataset_name(name, what="--name")
    else:
        try:
            name = dataset_name(src.stem)
        except UserError:
            raise UserError(f"cannot make a dataset name from the file name {src.name!r}", where=str(src),
                            fix="pass --name NAME") from None
    folder = data_folder(out_dir or layout.data_dir)
    out_path = folder / f"{name}.jsonl"
    rejects_path = folder / f"{name}.rejects.jsonl"
    for target in (out_path, rejects_path):
        if target.exists() and _is_same_file(src, target):
            raise UserError(f"the output {target.name} would overwrite the input {src}", where=str(src),
                            fix=f"pass another --name (e.g. --name {name}-converted)")
    fmt = detect_format(src) if fmt == "auto" else fmt
    if fmt in ("csv", "tsv"):
        records = _csv_records(src, "," if fmt == "csv" else "\t")
        convert = _from_row(question_col, answer_col, system_col)
    else:
        records = _json_records(src)
        convert = {"alpaca": from_alpaca, "sharegpt": from_sharegpt, "openai": from_openai}[fmt]
    counts = {"out": 0, "rej": 0}
    outcome: dict = {"replaced": [], "unchanged": False, "removed": None}

    def keep_out(tmp: Path) -> bool:
        if counts["out"] == 0:
            return False
        if not out_path.exists():
            return True
        if fileio.same_bytes(tmp, out_path):
            outcome["unchanged"] = True
            return False
        if not force:
            raise UserError(
                f"{out_path.name} already exists ({_count_lines(out_path)} conversation(s)) and differs from this "
                f"conversion ({counts['out']} conversation(s)); nothing was written",
                where=str(out_path),
                details=[f"it would also replace {rejects_path}"] if rejects_path.exists() else [],
                fix="pass --force to replace it, or --name to write another dataset")
        outcome["replaced"].append(str(out_path))
        return True

    def keep_rejects(tmp: Path) -> bool:
        if counts["rej"] == 0:
            if counts["out"] and rejects_path.exists():  # a stale rejects file from an earlier run would mislead
                rejects_path.unlink()
                outcome["removed"] = str(rejects_path)
            return False
        if rejects_path.exists():
            if fileio.same_bytes(tmp, rejects_path):
                return False
            outcome["replaced"].append(str(rejects_path))
        return True

    with fileio.locked(out_path), contextlib.ExitStack() as stack:
        rej = stack.enter_context(fileio.atomic_open(rejects_path, keep_if=keep_rejects))
        out = stack.enter_context(fileio.atomic_open(out_path, keep_if=keep_out))
        for line, rec in records:
            try:
                if isinstance(rec, Reject):
                    raise rec
                conv = convert(rec)
                verdict = chatml.classify(conv["messages"])
                if verdict is not None:
                    raise Reject(f"{verdict[0]}: {verdict[1]}")
            except Reject as why:
                raw = rec if not isinstance(rec, Reject) else None
                rej.write(orjson.dumps({"line": line, "reason": str(why), "source": str(src), "record": raw},
                                       default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n")
                counts["rej"] += 1
                continue
            out.write(orjson.dumps(conv) + b"\n")
            counts["out"] += 1
    if counts["out"] == 0:
        raise UserError(f"nothing in {src.name} could be converted as {fmt} ({counts['rej']} rejected)",
                        where=str(src), details=[f"reasons: {rejects_path}"] if counts["rej"] else [],
                        fix="check --fmt (and --question-col / --answer-col for CSV)")
    return ConvertResult(out_path, counts["out"], counts["rej"], rejects_path if counts["rej"] else None, fmt,
                         replaced=outcome["replaced"], unchanged=outcome["unchanged"],
                         removed_rejects=outcome["removed"])
