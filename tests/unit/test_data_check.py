"""data.check: every planted fault gets the right code, line and severity; broken files never crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.data import chatml
from finetune.data.check import ERROR, WARNING, check_file, check_files

ROOT = Path(__file__).resolve().parents[2]


def ok(i: int = 0, system: bool = False) -> dict:
    msgs = [{"role": "system", "content": "sys"}] if system else []
    return {"messages": msgs + [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


def turns(*pairs) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


def write(path: Path, lines) -> Path:
    with path.open("wb") as fh:
        for line in lines:
            fh.write(line if isinstance(line, bytes) else (json.dumps(line, ensure_ascii=False) + "\n").encode())
    return path


# (record line 2 between two good lines, expected code, severity, LF fails on the whole file)
CASES = {
    "empty": ({"messages": []}, "empty", ERROR, False),
    "only_system": (turns(("system", "s")), "empty", ERROR, False),
    "ends_on_user": (turns(("user", "u")), "ends-on-user", ERROR, False),
    "assistant_first": (turns(("assistant", "a"), ("user", "u")), "role-order", ERROR, False),
    "system_middle": (turns(("user", "u"), ("system", "s"), ("user", "u"), ("assistant", "a")),
                      "system-not-first", ERROR, False),
    "tool_role": (turns(("user", "u"), ("tool", "t")), "unknown-role", ERROR, False),
    "missing_role": ({"messages": [{"content": "u"}, {"role": "assistant", "content": "a"}]}, "unknown-role",
                     ERROR, False),
    "content_int": (turns(("user", 5), ("assistant", "a")), "type-clash", ERROR, True),
    "content_null": (turns(("user", None), ("assistant", "a")), "content-not-string", ERROR, True),
    "messages_missing": ({"conversations": []}, "messages-missing", ERROR, True),
    "messages_string": ({"messages": "hi"}, "messages-not-list", ERROR, True),
    "array_line": (b"[1, 2]\n", "not-an-object", ERROR, True),
    "invalid_json": (b'{"messages": [\n', "invalid-json", ERROR, True),
    "invalid_utf8": (b'{"messages": [{"role": "user", "content": "\xff"}, {"role": "assistant", "content": "a"}]}\n',
                     "invalid-utf8", ERROR, True),
    "bad_function_call": (turns(("user", "u"), ("function_call", "nope"), ("observation", "o"), ("assistant", "a")),
                          "function-call-not-json", ERROR, True),
    "empty_content": (turns(("user", "  "), ("assistant", "a")), "empty-content", WARNING, False),
    "unknown_key": ({**ok(5), "id": 7}, "unknown-key", WARNING, False),
    "duplicate": (ok(0), "duplicate", WARNING, False),
    "crlf": ((json.dumps(ok(9)) + "\r\n").encode(), "crlf", WARNING, False),
    "blank": (b"\n", "blank-line", WARNING, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_planted_fault_is_reported_on_its_line(tmp_path, case):
    record, code, severity, fatal = CASES[case]
    path = write(tmp_path / f"{case}.jsonl", [ok(0), record, ok(1)])
    report = check_file(path)
    hits = [p for p in report.problems if p.code == code]
    assert hits, [(p.line, p.code) for p in report.problems]
    assert hits[0].line == 2 and hits[0].severity == severity
    assert report.fatal is fatal
    assert (report.errors > 0) is (severity == ERROR)
    d = report.to_dict()
    assert all(p["fix"] and p["message"] for p in d["problems"])
    if severity == ERROR:
        assert report.error_lines == {2}


def test_valid_variants_pass(tmp_path):
    path = write(tmp_path / "good.jsonl", [
        ok(0), ok(1, system=True),
        turns(("user", "u"), ("function_call", '{"name": "f", "arguments": {"x": 1}}'), ("observation", "o"),
              ("assistant", "a")),
        {**turns(("user", "u"), ("assistant", "a")), "tools": '[{"name": "f"}]'},
        turns(("system", "s"), ("user", "u"), ("assistant", "a"), ("user", "u2"), ("assistant", "a2")),
    ])
    report = check_file(path)
    assert report.errors == 0 and report.valid == report.records == 5, report.to_dict()
    assert report.has_tools


def test_type_clash_blames_the_minority(tmp_path):
    # the odd line comes FIRST: the clash must still be reported there, not on the 3 good lines
    path = write(tmp_path / "clash.jsonl", [turns(("user", 1), ("assistant", 2)), ok(0), ok(1), ok(2)])
    report = check_file(path)
    assert report.error_lines == {1}
    assert report.valid == 3 and report.fatal


def test_no_valid_records_is_an_error(tmp_path):
    report = check_file(write(tmp_path / "none.jsonl", [{"messages": []}]))
    assert any(p.code == "no-valid-records" for p in report.problems)


def test_bom_is_a_warning(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(ok(0)) + "\n").encode())
    report = check_file(path)
    assert report.errors == 0 and [p.code for p in report.problems] == ["bom"]


def test_contract_shape(tmp_path):
    report = check_files([write(tmp_path / "a.jsonl", [ok(0), {"messages": []}])])
    d = report.to_dict()
    f = d["files"][0]
    assert {"path", "records", "valid", "problems"} <= set(f)
    assert {"line", "severity", "code", "message", "fix"} <= set(f["problems"][0])
    assert report.has_errors


def test_classify_matches_lf_rules():
    assert chatml.classify(ok(0)["messages"]) is None
    assert chatml.classify(ok(0, system=True)["messages"]) is None
    assert chatml.classify([])[0] == chatml.EMPTY
    assert chatml.classify(turns(("system", "s"), ("system", "s"), ("user", "u"), ("assistant", "a"))["messages"])[0] \
        == chatml.SYSTEM_NOT_FIRST


def test_dataset_entry_has_full_tag_map():
    entry = chatml.dataset_entry("x.jsonl", has_tools=True)
    assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "messages", "tools": "tools"}
    assert entry["tags"]["system_tag"] == "system"
    assert set(entry["tags"]) == {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag",
                                  "function_tag", "system_tag"}


def test_broken_corpus_never_tracebacks_via_invoke(tmp_path):
    files = []
    for name, (record, _code, _sev, _fatal) in CASES.items():
        files.append(write(tmp_path / f"{name}.jsonl", [ok(0), record]))
    files.append(write(tmp_path / "empty_file.jsonl", []))
    (tmp_path / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    files.append(tmp_path / "binary.jsonl")
    arg = ",".join(str(f) for f in files)
    out = subprocess.run([sys.executable, "-m", "invoke", "data.check", arg, "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, encoding="utf-8")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    report = json.loads(out.stdout)
    assert len(report["files"]) == len(files)
    for f in report["files"]:
        for p in f["problems"]:
            assert isinstance(p["line"], int) and p["code"] and p["message"] and p["fix"]
    human = subprocess.run([sys.executable, "-m", "invoke", "data.check", arg], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, encoding="utf-8")
    assert human.returncode == 1 and "Traceback" not in human.stderr
    assert f"{files[0]}:2:" in human.stdout  # file:line


def test_missing_file_is_one_message(tmp_path):
    out = subprocess.run([sys.executable, "-m", "invoke", "data.check", str(tmp_path / "nope.jsonl")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "no such file" in out.stderr and "Traceback" not in out.stderr


# --- nothing hidden: every error listed, warnings capped per code, counts per code ---------------
def test_every_error_is_listed_and_warnings_are_capped_per_code(tmp_path):
    from finetune.data.check import MAX_WARNINGS_PER_CODE

    lines = [ok(0)] * 1_500 + [{"messages": []}] * 12_000 + [b"{broken\n"]
    report = check_file(write(tmp_path / "many.jsonl", lines))
    d = report.to_dict()
    assert d["counts"] == {"invalid-json": 1, "empty": 12_000, "duplicate": 1_499}
    listed = [p for p in d["problems"] if p["code"] == "empty"]
    assert len(listed) == 12_000  # errors are never cut
    assert sum(p["code"] == "duplicate" for p in d["problems"]) == MAX_WARNINGS_PER_CODE
    assert d["unlisted"] == {"duplicate": 1_499 - MAX_WARNINGS_PER_CODE} and d["truncated_problems"] == 499
    assert any(p["line"] == 13_501 and p["code"] == "invalid-json" for p in d["problems"])


def test_type_clash_over_ten_thousand_lines_lists_every_line(tmp_path):
    lines = [ok(i) for i in range(12_000)] + [turns(("user", 5), ("assistant", "a"))] * 10_500
    report = check_file(write(tmp_path / "clash.jsonl", lines))
    clash = {p.line for p in report.problems if p.code == "type-clash"}
    assert clash == set(range(12_001, 22_501)) and report.valid == 12_000


# --- read the way LLaMA-Factory's loader reads ---------------------------------------------------
def test_json_array_loads_and_keeps_its_item_lines(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([ok(0), {"messages": []}, ok(1)], indent=2), encoding="utf-8")
    report = check_file(path)
    assert report.mode == "array" and not report.fatal and report.valid == 2
    empty_line = next(p.line for p in report.problems if p.code == "empty")
    text_lines = path.read_text(encoding="utf-8").splitlines()
    assert text_lines[empty_line - 1].strip() == "{" and text_lines[empty_line].strip() == '"messages": []'
    dup = tmp_path / "dup.json"
    dup.write_text('[{"messages": [], "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}]',
                   encoding="utf-8")
    assert check_file(dup).errors == 0  # pandas keeps the last value of a repeated key


def test_pretty_printed_and_concatenated_objects_load(tmp_path):
    path = tmp_path / "pretty.jsonl"
    path.write_text(json.dumps(ok(0), indent=2) + "\n" + json.dumps(ok(1)) + " " + json.dumps(ok(2)) + "\n",
                    encoding="utf-8")
    report = check_file(path)
    assert report.mode == "stream" and not report.fatal and report.valid == 3


@pytest.mark.parametrize("raw", [
    b'{"messages": [{"role": "user", "role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}\n',
    b'{"messages": [{"role": "user", "\\u0072ole": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}\n',
    b'{"messages": [{"role" : "user", "role":"user", "content": "u\\": x"}, {"role": "assistant", "content": "a"}]}\n',
    b'{"messages": [], "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}\n',
    b'{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "x": 1, "x": 2}\n',
])
def test_a_key_given_twice_fails_the_jsonl_file(tmp_path, raw):
    report = check_file(write(tmp_path / "dup.jsonl", [ok(0), raw, ok(1)]))
    assert report.fatal and report.error_lines == {2}
    assert [p.code for p in report.problems if p.severity == ERROR] == ["duplicate-key"]


def test_colons_and_escaped_quotes_in_content_are_not_duplicate_keys(tmp_path):
    tricky = turns(("user", 'he said "role": "user" : and \\": too'), ("assistant", "a : b"))
    report = check_file(write(tmp_path / "ok.jsonl", [tricky, ok(1)]))
    assert report.errors == 0 and report.valid == 2


@pytest.mark.parametrize("name,fatal", [("x.jsonl", False), ("x.json", False), ("X.JSONL", True), ("x.Json", True),
                                        ("x.txt", True), ("x", True)])
def test_extension_as_llamafactory_matches_it(tmp_path, name, fatal):
    report = check_file(write(tmp_path / name, [ok(0)]))
    assert report.fatal is fatal
    assert any(p.code == "bad-extension" for p in report.problems) is fatal


def test_null_and_missing_are_told_apart(tmp_path):
    report = check_file(write(tmp_path / "n.jsonl", [
        ok(0), turns(("user", None), ("assistant", "a")), {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
        {"messages": None}, {"id": 1}, {"messages": [{"content": "u"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": None, "content": "u"}, {"role": "assistant", "content": "a"}]}]))
    msgs = {p.line: p.message for p in report.problems if p.severity == ERROR}
    assert "content is null" in msgs[2] and "missing (no 'content' key)" in msgs[3]
    assert '"messages" is null' in msgs[4] and "no \"messages\" key (keys: 'id')" in msgs[5]
    assert "no 'role' key" in msgs[6] and "role null" in msgs[7]
