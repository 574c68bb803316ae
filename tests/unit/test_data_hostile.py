"""The data tasks under careless or hostile input, through the real `invoke` CLI in a child process:
a message and a non-zero exit code (or a correct result), never a traceback. One test per input
class of issue 11."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def invoke(*args: str, root: Path, check_rc: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "FINETUNE_ROOT": str(root), "PYTHONIOENCODING": "utf-8"}
    env.pop("FINETUNE_DATA_DIR", None)
    out = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, encoding="utf-8", timeout=120)
    assert "Traceback" not in out.stderr + out.stdout, out.stderr + out.stdout
    if check_rc is not None:
        assert out.returncode == check_rc, (out.returncode, out.stdout, out.stderr)
    return out


def write_jsonl(path: Path, recs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in recs),
                    encoding="utf-8")
    return path


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` (already filled) made unwritable for this user: a read-only tmpfs when root can
    mount one (root ignores permissions), an immutable folder, or plain permissions otherwise."""
    if sys.platform == "win32":
        pytest.skip("read-only folders are tested on POSIX")
    if os.geteuid() != 0:
        modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}
        for p in modes:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        try:
            yield "permissions"
        finally:
            for p, mode in modes.items():
                os.chmod(p, mode)
        return
    saved = folder.with_name(folder.name + ".src")
    folder.rename(saved)
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(folder)], capture_output=True).returncode == 0
    if mounted:
        subprocess.run(["cp", "-a", f"{saved}/.", str(folder)], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        try:
            yield "read-only file system"
        finally:
            subprocess.run(["umount", str(folder)], check=True)
            folder.rmdir()
            saved.rename(folder)
        return
    folder.rmdir()
    saved.rename(folder)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root without mount or chattr: no way to make a folder read-only")
    try:
        yield "immutable"
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


# --- closed pipe --------------------------------------------------------------------------------
@pytest.mark.parametrize("as_json", [True, False])
def test_closed_pipe_is_quiet(tmp_path, as_json):
    path = write_jsonl(tmp_path / "dups.jsonl", [GOOD] * 3000)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    args = [sys.executable, "-m", "invoke", "data.check", str(path), "--max-lines", "3000"] + (["--json"] if as_json else [])
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)  # `| head -c 10`: the reader goes away
    proc.stdout.close()
    err = proc.stderr.read().decode("utf-8", "replace")
    rc = proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert rc != 0


# --- read-only data dir / file ------------------------------------------------------------------
def test_read_only_data_dir_register_and_convert(tmp_path):
    data = tmp_path / "dataset" / "llamafactory"
    write_jsonl(data / "inside.jsonl", [GOOD])
    (data / "dataset_info.json").write_text("{}\n", encoding="utf-8")
    outside = write_jsonl(tmp_path / "raw" / "outside.jsonl", [GOOD])
    raw = write_jsonl(tmp_path / "raw" / "alpaca.jsonl", [{"instruction": "i", "output": "o"}])
    with read_only(data) as how:
        for args in (["data.register", str(data / "inside.jsonl")], ["data.register", str(outside)],
                     ["data.convert", str(raw)], ["data.register", str(outside), "--json"]):
            out = invoke(*args, root=tmp_path)
            assert out.returncode != 0, (how, args, out.stdout)
            text = out.stdout + out.stderr
            assert ("permission" in text or "read-only" in text or "not permitted" in text), (how, text)
    assert json.loads((data / "dataset_info.json").read_text(encoding="utf-8")) == {}


def test_read_only_info_file_is_replaced_keeping_its_mode(tmp_path):
    data = tmp_path / "dataset" / "llamafactory"
    f = write_jsonl(data / "chat.jsonl", [GOOD])
    info = data / "dataset_info.json"
    info.write_text("{}\n", encoding="utf-8")
    os.chmod(info, 0o444)
    invoke("data.register", str(f), root=tmp_path, check_rc=0)
    assert "chat" in json.loads(info.read_text(encoding="utf-8"))
    assert stat.S_IMODE(info.stat().st_mode) == 0o444


# --- dataset_info.json with a non-object entry -----------------------------------------------------
def test_non_object_entry_in_dataset_info(tmp_path):
    data = tmp_path / "dataset" / "llamafactory"
    f = write_jsonl(data / "chat.jsonl", [GOOD])
    (data / "dataset_info.json").write_text('{\n  "ok": {"file_name": "x.jsonl"},\n  "broken": "x.jsonl"\n}\n',
                                            encoding="utf-8")
    out = invoke("data.register", str(f), root=tmp_path, check_rc=2)
    assert "'broken'" in out.stderr and "dataset_info.json:3" in out.stderr and "not an object" in out.stderr
    out = invoke("data.register", str(f), "--json", root=tmp_path, check_rc=2)
    assert "broken" in json.loads(out.stdout)["error"]


# --- OpenAI tool_calls of wrong types; CSV fields over 128 KiB ------------------------------------
def test_tool_calls_of_wrong_types_are_rejected_with_reasons(tmp_path):
    def rec(calls):
        return {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": None, "tool_calls": calls},
                             {"role": "tool", "content": "t"}, {"role": "assistant", "content": "a"}]}

    ok_call = [{"type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]
    src = write_jsonl(tmp_path / "raw" / "oa.jsonl", [rec(5), rec("abc"), rec([5]), rec([{"function": {"name": 3}}]),
                                                       rec([{"function": {"name": "f", "arguments": "[1]"}}]), rec(ok_call)])
    out = invoke("data.convert", str(src), "--json", root=tmp_path, check_rc=0)
    res = json.loads(out.stdout)
    assert res["written"] == 1 and res["rejected"] == 5
    reasons = [json.loads(line)["reason"] for line in Path(res["rejects_path"]).read_text(encoding="utf-8").splitlines()]
    assert "tool_calls is a number" in reasons[0] and "tool_calls is a string" in reasons[1]
    assert "tool call 1 is a number" in reasons[2] and "name is a number" in reasons[3]
    assert "arguments are a list" in reasons[4]
    written = json.loads(Path(res["out_path"]).read_text(encoding="utf-8"))
    assert json.loads(written["messages"][1]["content"]) == [{"name": "f", "arguments": {"x": 1}}]


def test_csv_field_over_128_kib_converts(tmp_path):
    src = tmp_path / "raw" / "long.csv"
    src.parent.mkdir(parents=True)
    long = "x" * (200 * 1024)
    src.write_text(f"question,answer\nshort,{long}\nq2,a2\n", encoding="utf-8")
    res = json.loads(invoke("data.convert", str(src), "--json", root=tmp_path, check_rc=0).stdout)
    assert res["written"] == 2 and res["rejected"] == 0


# --- file names and dataset names ------------------------------------------------------------------
def test_file_name_with_a_comma_and_spaces(tmp_path):
    f = write_jsonl(tmp_path / "my data" / "a,b.jsonl", [GOOD])
    out = invoke("data.check", str(f), root=tmp_path, check_rc=0)
    assert f"next: invoke data.register '{f}'" in out.stdout  # quoted: a path with a space and a comma
    out = invoke("data.register", str(f), "--json", root=tmp_path, check_rc=0)
    assert json.loads(out.stdout)[0]["name"] == "a-b"
    out = invoke("data.check", f"{f},{tmp_path / 'nope.jsonl'}", root=tmp_path, check_rc=2)
    assert "no such file" in out.stderr and "comma" in out.stderr


def test_names_in_other_scripts_and_names_with_nothing_left(tmp_path):
    src = write_jsonl(tmp_path / "raw" / "alpaca.jsonl", [{"instruction": "i", "output": "o"}])
    res = json.loads(invoke("data.convert", str(src), "--name", "中文", "--json", root=tmp_path, check_rc=0).stdout)
    assert Path(res["out_path"]).name == "中文.jsonl"
    out = invoke("data.convert", str(src), "--name", "///", root=tmp_path, check_rc=2)
    assert "'///'" in out.stderr and "letter or digit" in out.stderr
    reg = json.loads(invoke("data.register", res["out_path"], "--names", "中文", "--json", root=tmp_path,
                            check_rc=0).stdout)
    assert reg[0]["name"] == "中文"
    out = invoke("data.register", res["out_path"], "--names", "///", root=tmp_path, check_rc=2)
    assert "'///'" in out.stderr


def test_force_over_a_different_copy_says_replaced(tmp_path):
    a = write_jsonl(tmp_path / "one" / "chat.jsonl", [GOOD])
    b = write_jsonl(tmp_path / "two" / "chat.jsonl", [GOOD, {"messages": [{"role": "user", "content": "x"},
                                                                          {"role": "assistant", "content": "y"}]}])
    assert "copied" in invoke("data.register", str(a), root=tmp_path, check_rc=0).stdout
    out = invoke("data.register", str(b), root=tmp_path, check_rc=2)
    assert "differs" in out.stderr and "--force" in out.stderr
    out = invoke("data.register", str(b), "--force", root=tmp_path, check_rc=0)
    assert "replaced the different copy" in out.stdout
    assert (tmp_path / "dataset" / "llamafactory" / "chat.jsonl").read_bytes() == b.read_bytes()


def test_convert_never_overwrites_without_force(tmp_path):
    data = tmp_path / "dataset" / "llamafactory"
    mine = write_jsonl(data / "chats.jsonl", [GOOD] * 3)
    before = mine.read_bytes()
    src = write_jsonl(tmp_path / "raw" / "chats.jsonl", [{"instruction": "i", "output": "o"}])
    out = invoke("data.convert", str(src), root=tmp_path, check_rc=2)
    assert "already exists (3 conversation(s))" in out.stderr and "--force" in out.stderr
    assert mine.read_bytes() == before
    # converting a rejects file back under its own name would replace (or delete) the source itself
    rejects = write_jsonl(data / "x.rejects.jsonl", [{"instruction": "i", "output": "o"}])
    out = invoke("data.convert", str(rejects), "--name", "x", "--force", root=tmp_path, check_rc=2)
    assert "would overwrite the input" in out.stderr and rejects.exists()
    out = invoke("data.convert", str(src), "--force", root=tmp_path, check_rc=0)
    assert "replaced" in out.stdout and mine.read_bytes() != before
    assert "unchanged" in invoke("data.convert", str(src), root=tmp_path, check_rc=0).stdout


# --- data.check flags and shapes ---------------------------------------------------------------------
def test_cutoff_without_tokenizer_is_refused(tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [GOOD])
    out = invoke("data.check", str(f), "--cutoff", "512", root=tmp_path, check_rc=2)
    assert "--cutoff needs --tokenizer" in out.stderr and "--tokenizer MODEL_DIR" in out.stderr


def test_shapes_llamafactory_reads_differently(tmp_path):
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([GOOD, GOOD | {"id": 1}], indent=2), encoding="utf-8")
    dup = write_jsonl(tmp_path / "dup.jsonl", [GOOD, '{"messages": [{"role": "user", "role": "user", "content": "q"}, '
                                                     '{"role": "assistant", "content": "a"}]}'])
    upper = write_jsonl(tmp_path / "UP.JSONL", [GOOD])
    null = write_jsonl(tmp_path / "null.jsonl", [GOOD, {"messages": [{"role": "user", "content": None},
                                                                    {"role": "assistant", "content": "a"}]}])
    out = invoke("data.check", str(arr), "--files", str(dup), "--files", str(upper), "--files", str(null), "--json",
                 root=tmp_path, check_rc=1)
    files = {Path(f["path"]).name: f for f in json.loads(out.stdout)["files"]}
    assert not files["arr.json"]["fatal"] and files["arr.json"]["valid"] == 2 and files["arr.json"]["mode"] == "array"
    assert files["dup.jsonl"]["fatal"] and files["dup.jsonl"]["counts"]["duplicate-key"] == 1
    assert files["UP.JSONL"]["fatal"] and "bad-extension" in files["UP.JSONL"]["counts"]
    msg = next(p["message"] for p in files["null.jsonl"]["problems"] if p["severity"] == "error")
    assert "content is null" in msg
    out = invoke("data.register", str(upper), root=tmp_path, check_rc=2)
    assert "not lower case" in out.stderr and "UP.jsonl" in out.stderr


def test_broken_line_after_10003_duplicates_is_listed(tmp_path):
    path = tmp_path / "dups.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" * 1 + (json.dumps(GOOD) + "\n") * 10_002 + "{broken\n", encoding="utf-8")
    out = invoke("data.check", str(path), "--json", root=tmp_path, check_rc=1)
    f = json.loads(out.stdout)["files"][0]
    errors = [p for p in f["problems"] if p["severity"] == "error"]
    assert [(p["line"], p["code"]) for p in errors] == [(10_004, "invalid-json")]
    assert f["counts"] == {"invalid-json": 1, "duplicate": 10_002} and f["unlisted"] == {"duplicate": 9_002}
    out = invoke("data.check", str(path), root=tmp_path, check_rc=1)
    assert f"{path}:10004: error invalid-json" in out.stdout
    assert "invalid-json 1" in out.stdout.replace("\n", " ") or "invalid-j" in out.stdout
    out = invoke("data.register", str(path), root=tmp_path, check_rc=2)
    assert "dups.jsonl:10004: invalid-json" in out.stderr


# --- a folder where a file should be, a file where the data dir should be ---------------------------
def test_folders_and_files_in_the_wrong_place(tmp_path):
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    for task in ("data.check", "data.register", "data.convert"):
        out = invoke(task, str(folder), root=tmp_path, check_rc=2)
        assert "folder, not a file" in out.stderr, out.stderr
    f = write_jsonl(tmp_path / "ok.jsonl", [GOOD])
    (tmp_path / "blocker").write_text("x", encoding="utf-8")
    for task in ("data.register", "data.convert"):
        out = invoke(task, str(f), "--data-dir", str(tmp_path / "blocker" / "sub"), root=tmp_path, check_rc=2)
        assert "file, not a folder" in out.stderr, out.stderr


# --- nesting deeper than Python's stack -------------------------------------------------------------
def test_deeply_nested_lines_are_messages_not_recursion_errors(tmp_path):
    d = 1_020
    lines = ['{"messages": ' + "[" * d + "]" * d + "}",
             json.dumps({**GOOD, "x": 0})[:-1] + ', "y": ' + "[" * 900 + "]" * 900 + "}"]
    path = write_jsonl(tmp_path / "deep.jsonl", lines)
    arr = tmp_path / "deep.json"
    arr.write_text("[" + "[" * 1_500 + "]" * 1_500 + "]", encoding="utf-8")
    out = invoke("data.check", str(path), "--files", str(arr), "--json", root=tmp_path, check_rc=1)
    files = json.loads(out.stdout)["files"]
    assert all(f["fatal"] for f in files)
    out = invoke("data.convert", str(arr), "--fmt", "openai", root=tmp_path, check_rc=2)
    assert "not valid JSON" in out.stderr
