"""Every task's output survives what Windows gives it: a cp1252 pipe (Chinese text, table and --json),
a reader that goes away (`--json | head -1`), and paths that cannot be written."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.cli import EXIT_PIPE, guarded
from finetune.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
ZH = "中文数据"


def invoke(args: list[str], tmp_path: Path, encoding: str = "cp1252", **kw) -> subprocess.CompletedProcess:
    """A real `invoke` process whose stdout / stderr are pipes encoded as Windows would (bytes back)."""
    env = {**os.environ, "PYTHONIOENCODING": encoding, "FINETUNE_ROOT": str(tmp_path / ZH), "PYTHONUTF8": "0"}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                          timeout=120, **kw)


def bad_chatml(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ZH}.jsonl"
    good = {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好！"}]}
    bad = {"messages": [{"role": "assistant", "content": "先说话的助手"}]}
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [good] + [bad] * n) + "\n",
                    encoding="utf-8")
    return path


def clean(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode("cp1252", errors="replace")
    assert "Traceback" not in err and "UnicodeEncodeError" not in err, err[-3000:]
    return err


def test_json_with_chinese_on_cp1252_is_valid_json_that_round_trips(tmp_path):
    path = bad_chatml(tmp_path / ZH)
    proc = invoke(["data.check", str(path), "--json"], tmp_path)
    clean(proc)
    assert proc.returncode == 1  # the file has errors: reported, not crashed
    report = json.loads(proc.stdout.decode("cp1252"))
    assert report["files"][0]["path"].endswith(f"{ZH}.jsonl")  # the exact Chinese text, back from cp1252


def test_table_with_chinese_on_cp1252_prints(tmp_path):
    path = bad_chatml(tmp_path / ZH)
    proc = invoke(["data.check", str(path)], tmp_path)
    clean(proc)
    out = proc.stdout.decode("cp1252")
    assert proc.returncode == 1 and "\\u4e2d\\u6587" in out  # escaped, readable, no crash


@pytest.mark.parametrize("args", [["doctor", "--fast"], ["doctor", "--fast", "--json"], ["runs"], ["runs", "--json"]])
def test_light_tasks_on_cp1252_with_a_chinese_root(tmp_path, args):
    proc = invoke(args, tmp_path)
    clean(proc)
    assert proc.returncode in (0, 1), proc.stderr.decode("cp1252")[-2000:]
    if "--json" in args:
        text = json.dumps(json.loads(proc.stdout.decode("cp1252")), ensure_ascii=False)
        assert args[0] == "runs" or ZH in text  # doctor names the layout root


def test_closed_pipe_is_quiet(tmp_path):
    path = bad_chatml(tmp_path / ZH, n=3000)  # a report far larger than a pipe's buffer
    env = {**os.environ, "FINETUNE_ROOT": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "data.check", str(path), "--json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(10)
    proc.stdout.close()  # `| head -c 10`
    err = proc.stderr.read().decode("utf-8", errors="replace")
    code = proc.wait(timeout=120)
    assert code != 0 and "Traceback" not in err and "BrokenPipeError" not in err, err[-2000:]


def test_guarded_broken_pipe_exit_code():
    def writer():
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    with pytest.raises(SystemExit) as exc:
        guarded(writer)
    assert exc.value.code == EXIT_PIPE


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux's read-only /sys for a real EACCES")
def test_guarded_unwritable_path_is_one_message(capsys):
    def write():
        (Path("/sys") / "finetune-probe").write_text("x", encoding="utf-8")

    with pytest.raises(SystemExit) as exc:
        guarded(write)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "permission denied" in err and "/sys/finetune-probe" in err
    assert "FINETUNE_ROOT" in err and "Traceback" not in err


def test_guarded_read_only_file_system_as_json(capsys):
    def write():
        raise OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out.jsonl")

    with pytest.raises(SystemExit):
        guarded(write, as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert doc["where"] == "/mnt/ro/out.jsonl" and "read-only" in doc["error"] and doc["fix"]


def test_guarded_other_errors_still_raise():
    def boom():
        raise OSError(errno.ECONNREFUSED, "refused")

    with pytest.raises(OSError):
        guarded(boom)
    with pytest.raises(SystemExit) as exc:
        guarded(lambda: (_ for _ in ()).throw(UserError("bad", exit_code=3)))
    assert exc.value.code == 3
