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

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from finetune.data import chatml
from finetune.errors import UserError
from finetune.layout import Layout, slugify

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

    def to_dict(self) -> dict:
        return {"out_path": str(self.out_path), "written": self.written, "rejected": self.rejected,
                "rejects_path": str(self.rejects_path) if self.rejects_path else None, "format": self.fmt}


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


def _csv_records(src: Path, delimiter: str) -> Iterator[tuple[int, object]]:
    with src.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        try:
            for row in reader:
                yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as err:
            kind = "TSV" if delimiter == "\t" else "CSV"
            raise UserError(f"cannot read {src.name} as {kind}: {err}",
                            where=f"{src}:{reader.line_num}", fix="save it as UTF-8 CSV with a header row") from None


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
        role = _SHAREGPT_ROLES.get(turn.get("from"))
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
        if role == "assistant" and m.get("tool_calls"):
            calls = [c.get("function") for c in m["tool_calls"] if isinstance(c, dict)]
            for call in calls:
                if isinstance(call, dict) and isinstance(call.get("arguments"), str):
                    try:
                        call["arguments"] = orjson.loads(call["arguments"])
                    except orjson.JSONDecodeError:
                        raise Reject(f"message {i} tool call arguments are not JSON") from None
            msgs.append({"role": chatml.FUNCTION, "content": orjson.dumps(calls).decode()})
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
class _AtomicOut:
    """A binary file written to a temp name, moved into place on success only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.fh = None
        self.count = 0

    def write(self, data: bytes) -> None:
        if self.fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = self.tmp.open("wb")
        self.fh.write(data)
        self.count += 1

    def commit(self) -> None:
        if self.fh is not None:
            self.fh.close()
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.tmp.unlink(missing_ok=True)


def convert_file(src: str | Path, layout: Layout, fmt: str = "auto", name: str | None = None,
                 question_col: str = "question", answer_col: str = "answer", system_col: str | None = "system",
                 out_dir: Path | None = None) -> ConvertResult:
    """Convert ``src`` into ``<data dir>/<name>.jsonl`` (+ ``<name>.rejects.jsonl`` when needed)."""
    src = Path(src).expanduser()
    if not src.is_file():
        raise UserError(f"no such file: {src}", fix="pass the path of a raw data file (json, jsonl, csv, tsv)")
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    fmt = detect_format(src) if fmt == "auto" else fmt
    name = slugify(name or src.stem, max_len=80)
    folder = out_dir or layout.data_dir
    out_path = folder / f"{name}.jsonl"
    rejects_path = folder / f"{name}.rejects.jsonl"
    if out_path.resolve() == src.resolve():
        raise UserError("output would overwrite the input", where=str(src), fix="pass another --name")
    if fmt in ("csv", "tsv"):
        records = _csv_records(src, "," if fmt == "csv" else "\t")
        convert = _from_row(question_col, answer_col, system_col)
    else:
        records = _json_records(src)
        convert = {"alpaca": from_alpaca, "sharegpt": from_sharegpt, "openai": from_openai}[fmt]
    out, rej = _AtomicOut(out_path), _AtomicOut(rejects_path)
    try:
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
                                       default=str) + b"\n")
                continue
            out.write(orjson.dumps(conv) + b"\n")
    except BaseException:
        out.abort()
        rej.abort()
        raise
    if out.count == 0:
        rej.commit()
        out.abort()
        raise UserError(f"nothing in {src.name} could be converted as {fmt} ({rej.count} rejected)",
                        where=str(src), details=[f"reasons: {rejects_path}"] if rej.count else [],
                        fix="check --fmt (and --question-col / --answer-col for CSV)")
    out.commit()
    if rej.count:
        rej.commit()
    else:
        rejects_path.unlink(missing_ok=True)  # a stale rejects file from an earlier run would mislead
    return ConvertResult(out_path, out.count, rej.count, rejects_path if rej.count else None, fmt)
