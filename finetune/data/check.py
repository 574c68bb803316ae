"""A streaming pre-flight check of ChatML JSONL that predicts what LLaMA-Factory will do.

Severity ``error`` means LLaMA-Factory drops that conversation (only a warning in its log) or
fails to load / train on the whole file; ``warning`` means it trains but you probably did not
want that. Each problem names the 1-based line, a code, a message and a fix. The drop rules live
in :mod:`finetune.data.chatml`; this module adds what the JSON loader (pyarrow through
``datasets``) does to a file: every line must be a JSON object, and a field must hold the same
JSON type on every line (a number where other lines hold strings fails the whole load with
``DatasetGenerationError`` and no line number).

The file is read the way ``datasets``' JSON builder (what LLaMA-Factory calls) reads it: first as
JSON Lines (pyarrow: whitespace-separated objects; a key given twice fails the file); when that
fails, as one JSON document (pandas): a ``[...]`` array of objects loads, keys given twice keep
the last value. Only ``.json`` / ``.jsonl`` (lower case) are read as JSON by LLaMA-Factory.

One pass, memory bounded by the problems found (a hash per line for duplicates). Every error is
listed; warnings are listed up to :data:`MAX_WARNINGS_PER_CODE` per code and counted beyond that
(``counts`` per code, in the table and in ``--json``). Light: no torch / transformers / datasets
unless ``tokenizer`` is given (then ``--cutoff`` lengths are measured with
:mod:`finetune.data.stats`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from finetune.data import chatml
from finetune.data.names import command, files_args, input_file
from finetune.errors import UserError

ERROR, WARNING = "error", "warning"
MAX_WARNINGS_PER_CODE = 1_000  # warnings of one code listed per file; counts stay exact. Errors: all listed.

# Codes: error ---------------------------------------------------------------------------------
INVALID_JSON = "invalid-json"
INVALID_UTF8 = "invalid-utf8"
NOT_OBJECT = "not-an-object"
MESSAGES_MISSING = "messages-missing"
MESSAGES_NOT_LIST = "messages-not-list"
MESSAGE_NOT_OBJECT = "message-not-object"
ROLE_NOT_STRING = "role-not-string"
TYPE_CLASH = "type-clash"
NO_RECORDS = "no-valid-records"
DUPLICATE_KEY = "duplicate-key"
BAD_EXTENSION = "bad-extension"
# Codes: warning -------------------------------------------------------------------------------
EMPTY_CONTENT = "empty-content"
SYSTEM_CONTENT_NULL = "system-content-null"
BOM = "bom"
CRLF = "crlf"
BLANK_LINE = "blank-line"
DUPLICATE = "duplicate"
UNKNOWN_KEY = "unknown-key"
TOOLS_NOT_STRING = "tools-not-string"
TOO_LONG = "longer-than-cutoff"

FIXES = {
    **chatml.FIXES,
    INVALID_JSON: "repair or delete the line (each line must be one complete JSON object)",
    INVALID_UTF8: "re-save the file as UTF-8 (e.g. iconv -f <encoding> -t UTF-8)",
    NOT_OBJECT: 'make the line a JSON object: {"messages": [...]}',
    MESSAGES_MISSING: 'add a "messages" list to the line, or delete it',
    MESSAGES_NOT_LIST: '"messages" must be a list of {"role", "content"} objects',
    MESSAGE_NOT_OBJECT: 'every item of "messages" must be an object {"role": ..., "content": ...}',
    ROLE_NOT_STRING: f"use one of the roles {', '.join(chatml.ROLES)} (a string)",
    TYPE_CLASH: "give this field the same JSON type on every line (e.g. always a string)",
    NO_RECORDS: "add conversations that pass the check; LLaMA-Factory stops with 'Cannot find valid samples'",
    DUPLICATE_KEY: "give each key once per object (delete the repeated one)",
    BAD_EXTENSION: "name the file *.jsonl (lower case; LLaMA-Factory's loader matches extensions exactly)",
    EMPTY_CONTENT: "write the message text, or delete the conversation",
    SYSTEM_CONTENT_NULL: "give the system message a string content or remove it (LLaMA-Factory uses the "
                         "template's default system prompt instead)",
    BOM: "re-save the file as UTF-8 without BOM",
    CRLF: "convert line endings to LF (e.g. dos2unix FILE)",
    BLANK_LINE: "delete the blank lines",
    DUPLICATE: "delete the repeated conversation (duplicates weigh that example twice)",
    UNKNOWN_KEY: "LLaMA-Factory ignores this key; remove it or register it as a column",
    TOOLS_NOT_STRING: 'store "tools" as a JSON string (json.dumps of the tool list)',
    TOO_LONG: "raise --cutoff (cutoff_len) or shorten the conversation; the end of it is cut off in training",
}


@dataclass(slots=True)
class Problem:
    line: int
    severity: str
    code: str
    message: str
    fix: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"line": self.line, "severity": self.severity, "code": self.code, "message": self.message,
                "fix": self.fix or FIXES.get(self.code, ""), **self.extra}


@dataclass
class FileReport:
    path: str
    records: int = 0
    valid: int = 0
    problems: list[Problem] = field(default_factory=list)
    errors: int = 0
    warnings: int = 0
    fatal: bool = False  # LLaMA-Factory fails on the whole file, not only drops lines
    truncated: int = 0  # warnings counted but not listed (over MAX_WARNINGS_PER_CODE of their code)
    has_tools: bool = False
    error_lines: set[int] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)  # code -> problems of that code (listed or not)
    severities: dict[str, str] = field(default_factory=dict)  # code -> severity
    mode: str = "jsonl"  # how LLaMA-Factory's loader reads the file: jsonl, array, stream

    def add(self, line: int, severity: str, code: str, message: str, **extra) -> None:
        n = self.counts.get(code, 0) + 1
        self.counts[code] = n
        self.severities[code] = severity
        if severity == ERROR:
            self.errors += 1
            self.error_lines.add(line)
        else:
            self.warnings += 1
            if n > MAX_WARNINGS_PER_CODE:
                self.truncated += 1
                return
        self.problems.append(Problem(line, severity, code, message, extra=extra))

    def sorted_counts(self) -> list[tuple[str, str, int]]:
        """(code, severity, count), errors first, then by count."""
        return sorted(((c, self.severities[c], n) for c, n in self.counts.items()),
                      key=lambda t: (t[1] != ERROR, -t[2], t[0]))

    def to_dict(self) -> dict:
        return {"path": self.path, "records": self.records, "valid": self.valid,
                "errors": self.errors, "warnings": self.warnings, "fatal": self.fatal, "mode": self.mode,
                "has_tools": self.has_tools, "truncated_problems": self.truncated,
                "counts": {c: n for c, _sev, n in self.sorted_counts()},
                "unlisted": {c: n - MAX_WARNINGS_PER_CODE for c, sev, n in self.sorted_counts()
                             if sev != ERROR and n > MAX_WARNINGS_PER_CODE},
                "problems": [p.to_dict() for p in sorted(self.problems, key=lambda p: p.line)]}


@dataclass
class CheckReport:
    files: list[FileReport]

    @property
    def has_errors(self) -> bool:
        return any(f.errors for f in self.files)

    def to_dict(self) -> dict:
        return {"files": [f.to_dict() for f in self.files]}


# Type tracking (what pyarrow's JSON reader refuses) ---------------------------------------------
_KIND_NAMES = {"s": "a string", "n": "a number", "b": "a boolean", "o": "an object", "l": "a list"}


def _kind(value) -> str | None:
    t = type(value)
    if t is str:
        return "s"
    if t is bool:
        return "b"
    if t is int or t is float:
        return "n"
    if t is dict:
        return "o"
    if t is list:
        return "l"
    return None


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # other keys are quoted in field paths ("", "a.b", "x[]")


class _Types:
    """Lines per JSON kind per field path (``messages[].content``). pyarrow's JSON reader needs one
    kind per field across the file; the kind most lines use is taken as intended, the others clash."""

    STANDARD = (("messages", "l"), ("messages[]", "o"), ("messages[].role", "s"), ("messages[].content", "s"))
    MAX_LINES = 10_000

    def __init__(self, all_lines: bool = False) -> None:
        self.max_lines = 1 << 62 if all_lines else self.MAX_LINES
        # path -> kind -> [line count, last line, first line, lines (capped)]
        self.kinds: dict[str, dict[str, list]] = {}

    def _note(self, path: str, kind: str, line: int, keep_line: bool = True) -> None:
        by_kind = self.kinds.setdefault(path, {})
        entry = by_kind.get(kind)
        if entry is None:
            by_kind[kind] = [1, line, line, [line] if keep_line else []]
        elif entry[1] != line:
            entry[0] += 1
            entry[1] = line
            if keep_line and len(entry[3]) < self.max_lines:
                entry[3].append(line)

    def walk(self, value, path: str, line: int) -> None:
        stack = [(value, path)]  # iterative: a line nested 1,000 deep must not exhaust Python's stack
        while stack:
            value, path = stack.pop()
            kind = _kind(value)
            if kind is None:
                continue
            self._note(path, kind, line)
            if kind == "o":
                for key, sub in value.items():
                    name = key if _PLAIN_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
                    stack.append((sub, f"{path}.{name}" if path else name))
            elif kind == "l":
                inner = f"{path}[]"
                stack.extend((sub, inner) for sub in value)

    def add_fast(self, lines: int, first: int, msg_lines: int, msg_first: int) -> None:
        """Count the lines of the usual shape (the fast path counts them without their numbers)."""
        for (path, kind), count, line in zip(self.STANDARD, (lines, msg_lines, msg_lines, msg_lines),
                                             (first, msg_first, msg_first, msg_first), strict=True):
            if not count:
                continue
            entry = self.kinds.setdefault(path, {}).setdefault(kind, [0, 0, line, []])
            entry[0] += count
            entry[2] = min(entry[2], line) if entry[2] else line

    def clashes(self):
        """(path, minority kind, its entry, majority kind, its entry) for every clashing field."""
        for path, by_kind in self.kinds.items():
            if len(by_kind) < 2:
                continue
            major = max(by_kind, key=lambda k: (by_kind[k][0], -by_kind[k][2]))
            for kind, entry in by_kind.items():
                if kind != major:
                    yield path, kind, entry, major, by_kind[major]


_ALTERNATION = ["user", "assistant"] * 4096
_KEY_END_RE = re.compile(rb'"[ \t\r\n]*:')  # a key's closing quote and its colon (or an escaped quote + colon)


def _utf8_error(raw: bytes) -> str | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"byte {err.start + 1} of the line is not valid UTF-8 ({raw[err.start:err.start + 1]!r})"
    return None


def extension_problem(path: Path) -> str | None:
    """Why LLaMA-Factory would not read ``path`` as JSON (its extension table is lower case)."""
    ext = path.suffix
    if ext in chatml.CHATML_EXTENSIONS:
        return None
    if ext.lower() in chatml.CHATML_EXTENSIONS:
        return (f"the extension {ext!r} is not lower case; LLaMA-Factory's loader knows only .json / .jsonl "
                "and stops with 'Allowed file types'")
    return (f"LLaMA-Factory does not read {ext or 'a file without extension'!r} as JSON "
            "(it reads .json / .jsonl; .txt, .csv, .parquet go to other loaders)")


def _count_keys(value) -> int:
    n, stack = 0, [value]
    while stack:
        value = stack.pop()
        t = type(value)
        if t is dict:
            n += len(value)
            stack.extend(value.values())
        elif t is list:
            stack.extend(value)
    return n


def _dup_key_check(raw: bytes, nkeys: int) -> str | None:
    """The key given twice in one object, or None. Cheap filters first: every key is followed by a
    colon, and every key's closing quote by ``\\s*:`` (inside strings a quote is escaped), so when
    either count equals the parsed keys no key can be there twice; otherwise the standard parser
    looks closer."""
    if raw.count(b":") == nkeys or len(_KEY_END_RE.findall(raw)) == nkeys:
        return None
    found: list[str] = []

    def hook(pairs):
        seen = set()
        for k, _v in pairs:
            if k in seen and not found:
                found.append(k)
            seen.add(k)
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return None
    return found[0] if found else None


_WS_RE = re.compile(r"[ \t\n\r]*")


def _document_records(path: Path) -> tuple[str, list[tuple[int, object]]] | None:
    """The file as ``datasets``' JSON builder reads it when it is not one object per line:
    ``("stream", values)`` for whitespace-separated objects (pyarrow: pretty-printed objects, two on
    one line), ``("array", items)`` for one ``[...]`` document (pandas). ``None`` when neither
    parses (then LLaMA-Factory fails on the file)."""
    try:
        text = path.read_bytes().decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        return None
    decoder = json.JSONDecoder()
    values: list[tuple[int, object]] = []
    pos = _WS_RE.match(text, 0).end()
    line = 1 + text.count("\n", 0, pos)
    last = pos
    try:
        while pos < len(text):
            value, end = decoder.raw_decode(text, pos)
            line += text.count("\n", last, pos)
            last = pos
            values.append((line, value))
            pos = _WS_RE.match(text, end).end()
    except (ValueError, RecursionError):  # not JSON, or nested deeper than any loader takes
        return None
    if len(values) == 1 and type(values[0][1]) is list:
        start = values[0][0]
        # line of each item: decode the array item by item to know where each starts
        items: list[tuple[int, object]] = []
        pos = _WS_RE.match(text, 0).end() + 1
        last, line = pos, start
        while True:
            pos = _WS_RE.match(text, pos).end()
            if text[pos] == "]":
                break
            value, end = decoder.raw_decode(text, pos)
            line += text.count("\n", last, pos)
            last = pos
            items.append((line, value))
            pos = _WS_RE.match(text, end).end()
            if text[pos] == ",":
                pos += 1
        return "array", items
    return "stream", values


def check_file(path: Path, cutoff: int | None = None, tokenizer=None, _fast: bool = True,
               _mode: str = "jsonl", _all_lines: bool = False) -> FileReport:
    """Check one ChatML JSONL file (see the module docstring)."""
    path = Path(path)
    report = FileReport(path=str(path), mode=_mode)
    input_file(path)
    types = _Types(all_lines=_all_lines)
    use_fast = _fast and _mode == "jsonl"
    fast_lines = fast_first = fast_msg_lines = fast_msg_first = 0
    records = fast_valid = 0  # counted locally in the hot loop
    measure = tokenizer is not None and bool(cutoff)
    seen: dict[int, int] = {}  # hash of the line -> first line number
    unknown: dict[str, list[int]] = {}  # key -> [first line, count]
    crlf = [0, 0]
    blank = [0, 0]
    classify = chatml.classify
    add = report.add
    to_measure: list[tuple[int, list]] = []
    bad_json = 0  # lines that do not parse as one JSON value: maybe the file is one document
    in_array = _mode == "array"

    def accept(lineno: int, msgs: list, first: int | None) -> None:
        """A conversation LLaMA-Factory keeps: count it, note a duplicate, queue it for the cutoff check."""
        if first is not None:
            add(lineno, WARNING, DUPLICATE, f"same conversation as line {first}", duplicate_of=first)
        report.valid += 1
        if tokenizer is not None and cutoff:
            to_measure.append((lineno, msgs))
            if len(to_measure) >= 512:
                _flag_long(report, to_measure, tokenizer, cutoff)
                to_measure.clear()

    def slow(lineno: int, rec, first: int | None, raw: bytes | None) -> None:
        """Every rule, for records off the fast path (and every record of a JSON document)."""
        if type(rec) is not dict:
            kind = _KIND_NAMES.get(_kind(rec), "null")
            if in_array:
                why = "LLaMA-Factory's loader (pandas) fails on the whole array"
            elif rec is None:
                why = "LLaMA-Factory loads it as an empty row and its converter fails on it"
            else:
                why = "LLaMA-Factory fails to load the file"
            add(lineno, ERROR, NOT_OBJECT, f"{'item' if in_array else 'line'} is {kind}, not a JSON object; {why}")
            report.fatal = True
            return
        if raw is not None:
            dup = _dup_key_check(raw, _count_keys(rec))
            if dup is not None:
                add(lineno, ERROR, DUPLICATE_KEY, f"key {dup!r} is given twice in one object; LLaMA-Factory's "
                    "loader (pyarrow) fails on the whole file", key=dup)
                report.fatal = True
                return
        types.walk(rec, "", lineno)
        for key in rec:
            if key not in chatml.KNOWN_TOP_KEYS:
                slot = unknown.setdefault(key, [lineno, 0])
                slot[1] += 1
        tools = rec.get("tools")
        if tools is not None:
            report.has_tools = True
            if type(tools) is not str:
                add(lineno, WARNING, TOOLS_NOT_STRING, '"tools" is not a JSON string')
        msgs = rec.get("messages")
        if msgs is None:
            what = '"messages" is null' if "messages" in rec else (
                f'no "messages" key (keys: {", ".join(map(repr, list(rec)[:5])) or "none"})')
            add(lineno, ERROR, MESSAGES_MISSING, f"{what}; LLaMA-Factory's converter fails on it and the run stops")
            report.fatal = True
            return
        if type(msgs) is not list:
            add(lineno, ERROR, MESSAGES_NOT_LIST, f'"messages" is {_KIND_NAMES[_kind(msgs)]}, not a list; '
                "LLaMA-Factory fails on it")
            report.fatal = True
            return
        for i, m in enumerate(msgs):
            if type(m) is not dict:
                add(lineno, ERROR, MESSAGE_NOT_OBJECT, f"message {i + 1} is "
                    f"{_KIND_NAMES.get(_kind(m), 'null')}, not an object; LLaMA-Factory's converter fails on it")
                report.fatal = True
                return
            for key in m:
                if key not in chatml.KNOWN_MESSAGE_KEYS:
                    slot = unknown.setdefault(f"messages[].{key}", [lineno, 0])
                    slot[1] += 1
            role = m.get("role")
            if role is not None and type(role) is not str:
                add(lineno, ERROR, ROLE_NOT_STRING, f"message {i + 1} role is {_KIND_NAMES[_kind(role)]}")
                return
        verdict = classify(msgs)
        if verdict is not None:
            code, message, _turn = verdict
            add(lineno, ERROR, code, message)
            if code in (chatml.CONTENT_NOT_STRING, chatml.BAD_FUNCTION_CALL):
                report.fatal = True
            return
        if msgs[0].get("role") == chatml.SYSTEM and msgs[0].get("content") is None:
            add(lineno, WARNING, SYSTEM_CONTENT_NULL, "system message has "
                + ("content null" if "content" in msgs[0] else "no content key"))
        for i, m in enumerate(msgs):
            c = m.get("content")
            if type(c) is str and (not c or c.isspace()):
                add(lineno, WARNING, EMPTY_CONTENT, f"message {i + 1} ({m.get('role')}) is empty or whitespace")
                break
        accept(lineno, msgs, first)

    ext_problem = extension_problem(path)
    if ext_problem:
        add(0, ERROR, BAD_EXTENSION, ext_problem)
        report.fatal = True
    if _mode != "jsonl":
        found = _document_records(path)
        assert found is not None and found[0] == _mode
        for lineno, rec in found[1]:
            report.records += 1
            key = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS) if type(rec) is dict else b""
            h = hash(key)
            first = seen.get(h) if key else None
            if key and first is None:
                seen[h] = lineno
            # a key given twice: pyarrow (stream) fails; pandas (array) keeps the last value
            slow(lineno, rec, first, None)
        if _mode == "stream":
            # keys given twice make pyarrow fail; look again with the raw text of each value
            _stream_dup_keys(path, report)
    else:
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                    add(1, WARNING, BOM, "file starts with a UTF-8 byte order mark")
                crlf_line = raw.endswith(b"\r\n")
                if crlf_line:
                    crlf[0] = crlf[0] or lineno
                    crlf[1] += 1
                if raw.isspace():
                    blank[0] = blank[0] or lineno
                    blank[1] += 1
                    continue
                records += 1
                try:
                    rec = orjson.loads(raw)
                except orjson.JSONDecodeError as err:
                    bad = _utf8_error(raw)
                    if bad:
                        add(lineno, ERROR, INVALID_UTF8, f"{bad}; LLaMA-Factory fails on it")
                    else:
                        bad_json += 1
                        add(lineno, ERROR, INVALID_JSON, f"invalid JSON ({err}); LLaMA-Factory fails to load the file")
                    report.fatal = True
                    continue
                if type(rec) is list:
                    bad_json += 1  # maybe a one-line JSON array document
                # duplicates: the line without its line end (no copy for the usual "...\n" line)
                h = hash(raw if not crlf_line and raw.endswith(b"\n") else raw.rstrip(b"\r\n") + b"\n")
                first = seen.get(h)
                if first is None:
                    seen[h] = lineno
                msgs = rec.get("messages") if type(rec) is dict else None
                # Fast path: the usual shape {"messages": [{"role": str, "content": str}, ...]} with
                # non-empty contents and plain (system) user/assistant alternation; everything else goes
                # the slow way (type tracking, structure, chatml.classify).
                if use_fast and type(msgs) is list and len(rec) == 1:
                    roles = []
                    for m in msgs:
                        if type(m) is not dict or len(m) != 2:
                            break
                        r = m.get("role")
                        c = m.get("content")
                        if type(r) is not str or type(c) is not str or not c or c.isspace():
                            break
                        roles.append(r)
                    else:
                        n = len(roles)
                        # a key given twice? Not when the line has no more colons (or key ends) than the
                        # record has keys (each key is followed by one); otherwise the slow path looks closer
                        if raw.count(b":") != 2 * n + 1 and len(_KEY_END_RE.findall(raw)) != 2 * n + 1:
                            slow(lineno, rec, first, raw)  # maybe a key given twice
                            continue
                        fast_lines += 1
                        fast_first = fast_first or lineno
                        if msgs:
                            fast_msg_lines += 1
                            fast_msg_first = fast_msg_first or lineno
                        if n and n % 2 == 0 and roles == _ALTERNATION[:n]:
                            pass
                        elif n > 2 and n % 2 == 1 and roles[0] == "system" and roles[1:] == _ALTERNATION[:n - 1]:
                            pass
                        else:
                            verdict = classify(msgs)
                            if verdict is not None:
                                code, message, _turn = verdict
                                add(lineno, ERROR, code, message)
                                if code in (chatml.CONTENT_NOT_STRING, chatml.BAD_FUNCTION_CALL):
                                    report.fatal = True
                                continue
                        if first is None and not measure:
                            fast_valid += 1  # accept() inlined for the common case
                        else:
                            accept(lineno, msgs, first)
                        continue
                slow(lineno, rec, first, raw)
        if bad_json:
            found = _document_records(path)
            if found is not None:
                # not JSON Lines, but a document datasets' JSON builder reads (an array, pretty-printed objects)
                again = check_file(path, cutoff=cutoff, tokenizer=tokenizer, _fast=False, _mode=found[0])
                if found[0] == "array" or not again.fatal or not any(
                        p.code == DUPLICATE_KEY for p in again.problems):
                    return again
    report.records += records
    report.valid += fast_valid
    if to_measure:
        _flag_long(report, to_measure, tokenizer, cutoff)
    types.add_fast(fast_lines, fast_first, fast_msg_lines, fast_msg_first)
    clashes = list(types.clashes())
    if use_fast and any((fpath, kind) in _Types.STANDARD for fpath, kind, *_ in clashes):
        # The usual shape is the minority here: count again keeping every line number.
        return check_file(path, cutoff=cutoff, tokenizer=tokenizer, _fast=False, _mode=_mode,
                          _all_lines=_all_lines)
    if not _all_lines and any(entry[0] > len(entry[3]) for _p, _k, entry, _m, _e in clashes):
        # More clashing lines than kept while counting: count again keeping every one (errors are all listed).
        return check_file(path, cutoff=cutoff, tokenizer=tokenizer, _fast=False, _mode=_mode, _all_lines=True)
    loader = "LLaMA-Factory's loader (pandas) fails on the whole array" if in_array else \
        "LLaMA-Factory fails to load the whole file (DatasetGenerationError, no line number)"
    for fpath, kind, entry, major, major_entry in clashes:
        _count, _last, _first, lines = entry
        report.fatal = True
        for line in lines:
            if line not in report.error_lines:
                report.valid -= 1
            add(line, ERROR, TYPE_CLASH,
                f"field {fpath} is {_KIND_NAMES[kind]} here but {_KIND_NAMES[major]} on {major_entry[0]} "
                f"{'item' if in_array else 'line'}(s) (first: line {major_entry[2]}); {loader}", field=fpath)
    if crlf[1]:
        add(crlf[0], WARNING, CRLF, f"{crlf[1]} line(s) end with CRLF (first here)", count=crlf[1])
    if blank[1]:
        add(blank[0], WARNING, BLANK_LINE, f"{blank[1]} blank line(s) (first here); LLaMA-Factory skips them",
            count=blank[1])
    for key, (first_line, count) in unknown.items():
        add(first_line, WARNING, UNKNOWN_KEY, f"unknown key {key!r} seen {count} time(s) (first here)",
            key=key, count=count)
    if report.valid == 0:
        add(0, ERROR, NO_RECORDS, "no conversation in this file survives LLaMA-Factory's checks; it stops with "
            "'Cannot find valid samples'")
        report.fatal = True
    return report


def _stream_dup_keys(path: Path, report: FileReport) -> None:
    """Keys given twice in whitespace-separated JSON values (pyarrow fails on the file)."""
    text = path.read_bytes().decode("utf-8").lstrip("\ufeff")
    found: list[str] = []

    def hook(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys) and not found:
            found.append(next(k for i, k in enumerate(keys) if k in keys[:i]))
        return dict(pairs)

    decoder = json.JSONDecoder(object_pairs_hook=hook)
    pos = _WS_RE.match(text, 0).end()
    while pos < len(text):
        found.clear()
        _value, end = decoder.raw_decode(text, pos)
        if found:
            line = 1 + text.count("\n", 0, pos)
            report.add(line, ERROR, DUPLICATE_KEY, f"key {found[0]!r} is given twice in one object; "
                       "LLaMA-Factory's loader (pyarrow) fails on the whole file", key=found[0])
            report.fatal = True
        pos = _WS_RE.match(text, end).end()


def _flag_long(report: FileReport, batch: list[tuple[int, list]], tokenizer, cutoff: int) -> None:
    from finetune.data.stats import conversation_lengths

    for (lineno, _msgs), n in zip(batch, conversation_lengths(tokenizer, [m for _, m in batch]), strict=True):
        if n > cutoff:
            report.add(lineno, WARNING, TOO_LONG, f"{n} tokens, longer than the cutoff {cutoff}; "
                       "LLaMA-Factory truncates it", tokens=n)


def check_files(paths: Iterable[str | Path], cutoff: int | None = None, tokenizer=None) -> CheckReport:
    """Check each file. ``tokenizer`` may be a loaded tokenizer or a path (loaded with transformers)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no files to check", fix="invoke data.check dataset/llamafactory/FILE.jsonl")
    if cutoff and tokenizer is None:
        raise UserError("--cutoff needs --tokenizer: lengths are counted in the model's tokens",
                        fix=command(["invoke", "data.check", *map(str, paths), "--cutoff", str(cutoff),
                                     "--tokenizer", "MODEL_DIR"]))
    if tokenizer is not None and not cutoff:
        raise UserError("--tokenizer needs --cutoff", fix="add --cutoff 1024 (your cutoff_len)")
    for p in paths:
        input_file(p)
    if isinstance(tokenizer, (str, Path)):
        from finetune.data.stats import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    return CheckReport([check_file(p, cutoff=cutoff, tokenizer=tokenizer) for p in paths])


# Output -----------------------------------------------------------------------------------------
def _counts_text(f: FileReport) -> str:
    return ", ".join(f"{code} {n:,}" for code, _sev, n in f.sorted_counts()) or "-"


def render(report: CheckReport, max_lines: int = 50, console=None) -> None:
    """A rich summary table (with counts per code), then ``file:line code message`` + fix for each
    problem, errors first (every error is in ``--json``; warnings up to the per-code cap)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(soft_wrap=True)
    table = Table(title="data.check")
    for col in ("file", "records", "valid", "errors", "warnings", "LLaMA-Factory", "problems by code"):
        table.add_column(col, justify="right" if col in ("records", "valid", "errors", "warnings") else "left")
    for f in report.files:
        verdict = ("[red]fails on the file[/]" if f.fatal else
                   f"[yellow]drops {f.records - f.valid}[/]" if f.errors else "[green]loads all[/]")
        table.add_row(escape(f.path), f"{f.records:,}", f"{f.valid:,}", f"{f.errors:,}", f"{f.warnings:,}", verdict,
                      escape(_counts_text(f)))
    console.print(table)
    for f in report.files:
        shown = 0
        for p in sorted(f.problems, key=lambda p: (p.severity != ERROR, p.line)):
            if shown >= max_lines:
                console.print(f"  ... {f.errors + f.warnings - shown:,} more (use --json for every error and up to "
                              f"{MAX_WARNINGS_PER_CODE:,} warnings per code)", highlight=False)
                break
            color = "red" if p.severity == ERROR else "yellow"
            console.print(f"{escape(f.path)}:{p.line}: [{color}]{p.severity}[/] {p.code}: {escape(p.message)}",
                          highlight=False)
            console.print(f"    fix: {escape(p.fix or FIXES.get(p.code, ''))}", highlight=False)
            shown += 1


def next_step(report: CheckReport, files: Sequence[str | Path]) -> str:
    if report.has_errors:
        return f"fix the errors above, then: {command(files_args('data.check', files))}"
    return f"next: {command(files_args('data.register', files))}"
