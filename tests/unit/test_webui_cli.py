"""One command line for the Web UI, the port test the server would pass, the stop marker, and the
trainer guard with real processes (light: no LLaMA-Factory, no torch)."""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune.llama_factory import launcher

ROOT = Path(__file__).resolve().parents[2]


def test_invoke_task_and_module_entry_share_one_definition():
    import tasks

    body = tasks.webui.body
    params = [p for p in inspect.signature(body).parameters if p != "c"]
    assert params == list(launcher.OPTION_FIELDS)
    defaults = {f: inspect.signature(body).parameters[f].default for f in params}
    for f in launcher.fields(launcher.WebUIOptions):
        expected = [] if f.name == "dataset" else f.default
        assert (defaults[f.name] or ([] if f.name == "dataset" else defaults[f.name])) == expected, f.name
    assert tasks._webui_help() == launcher.FLAG_HELP  # the task's help is the launcher's, not a copy
    parser = launcher.build_parser()
    ns = parser.parse_args(["--dataset", "a", "--dataset", "b", "--port", "9000", "--strict-port"])
    opts = launcher.WebUIOptions(**vars(ns))
    assert opts.dataset == ["a", "b"] and opts.port == 9000 and opts.strict_port and opts.method == "env"
    assert {a.dest for a in parser._actions if a.dest != "help"} == set(launcher.OPTION_FIELDS)


def test_password_never_comes_from_a_flag_value(tmp_path):
    flags = [a.option_strings[0] for a in launcher.build_parser()._actions if a.option_strings]
    assert "--auth-password" not in flags
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n", encoding="utf-8")
    assert launcher._password_from_file(str(pw)) == "s3cret"
    with pytest.raises(launcher.UserError, match="cannot read"):
        launcher._password_from_file(str(tmp_path / "missing"))


def test_password_reaches_the_child_in_a_private_file(layout):
    path = launcher._password_file(layout, "s3cret")
    env = launcher.build_env(layout, "env", "0.0.0.0", 7861, False, None, ("alice", "s3cret", False),
                             base={}, password_file=path)
    assert "s3cret" not in json.dumps(env)
    assert env["FINETUNE_WEBUI_PASSWORD_FILE"] == str(path) and env["FINETUNE_WEBUI_USER"] == "alice"
    if sys.platform != "win32":
        assert path.stat().st_mode & 0o077 == 0
    from finetune.llama_factory.board import _read_password

    assert _read_password(env) == "s3cret" and not path.exists()  # read once, then gone


def test_a_port_held_only_by_time_wait_sockets_is_free():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    assert not launcher.port_free("127.0.0.1", port)  # listening: taken
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the server side closes first: its end waits in TIME_WAIT
    time.sleep(0.1)
    client.close()
    listener.close()
    if sys.platform == "win32":
        pytest.skip("Windows has no SO_REUSEADDR semantics for TIME_WAIT (exclusive bind)")
    with socket.socket() as plain:  # the old test (a plain bind) would call it taken
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    assert launcher.port_free("127.0.0.1", port)
    assert launcher.choose_port("127.0.0.1", port) == (port, "")


@pytest.mark.skipif(sys.platform == "win32", reason="reads the file from a SIGTERM handler (POSIX)")
def test_stop_marks_the_pid_file_before_signalling(layout, tmp_path):
    """`--stop` from another shell: when the UI gets the signal, the PID file already says the stop
    was asked for (what the serving launcher reads to report a stop, exit 0)."""
    import psutil

    from finetune.proc import popen_group

    seen = tmp_path / "seen.json"
    code = ("import signal, sys, time, pathlib\n"
            f"def on_term(*a):\n    pathlib.Path({str(seen)!r}).write_text("
            f"pathlib.Path({str(layout.pid_file)!r}).read_text()); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, on_term)\nprint('ready', flush=True)\ntime.sleep(60)\n")
    proc = popen_group([sys.executable, "-c", code])
    try:
        time.sleep(1.0)
        layout.state_dir.mkdir(parents=True)
        layout.pid_file.write_text(json.dumps({"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(),
                                               "url": "http://127.0.0.1:1/"}), encoding="utf-8")
        res = launcher.stop(layout, timeout=10)
        assert res["stopped"] and proc.wait(timeout=10) == 0
        assert json.loads(seen.read_text(encoding="utf-8"))["stop_requested"]
        assert not layout.pid_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif(sys.platform == "win32", reason="kills a parent with SIGKILL (POSIX)")
def test_guard_stops_the_trainer_when_the_ui_dies(tmp_path):
    """A stand-in UI starts a 'trainer' under the guard exactly as the patched LlamaBoard does; the UI
    is killed (no chance to clean up): the trainer is stopped by its guard."""
    import psutil

    pid_file = tmp_path / "trainer.pid"
    trainer = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    ui = ("import subprocess, sys, time\n"
          "from finetune.proc import guarded_command\n"
          f"subprocess.Popen(guarded_command([sys.executable, '-c', {trainer!r}]))\n"
          "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", ui], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.is_file() or not pid_file.read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        trainer_pid = int(pid_file.read_text())
        assert psutil.pid_exists(trainer_pid)
        proc.kill()
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs([psutil.Process(trainer_pid)], timeout=20)
        assert not alive, "the trainer outlived the UI"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals; Windows forwards CTRL_BREAK")
def test_guard_forwards_a_stop_and_returns_the_exit_code(tmp_path):
    import signal

    ready = tmp_path / "ready"
    code = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); "
            f"pathlib.Path({str(ready)!r}).write_text('1'); time.sleep(60)")
    from finetune.proc import guarded_command

    proc = subprocess.Popen(guarded_command([sys.executable, "-c", code]), cwd=ROOT)
    deadline = time.monotonic() + 60
    while not ready.is_file():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 7


def test_guard_copies_the_trainers_stderr_to_its_reader_and_a_file(tmp_path):
    """As LlamaBoard starts trainers (stderr=PIPE, read at the end): the reader still gets the traceback,
    and the file keeps it for `invoke runs` and the Runs tab."""
    from finetune.proc import guarded_command

    copy = tmp_path / "logs" / "run" / "train.log"
    code = "import sys; print('step 1', file=sys.stderr); raise RuntimeError('DefaultCPUAllocator: can\\'t allocate memory')"
    proc = subprocess.Popen(guarded_command([sys.executable, "-c", code], stderr_copy=copy), cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "step 1" in err and "RuntimeError: DefaultCPUAllocator: can't allocate memory" in err
    assert copy.read_text(encoding="utf-8") == err


def test_guard_keeps_copying_when_its_reader_is_gone(tmp_path):
    """The UI died and its end of the pipe is closed: the trainer is not blocked or killed by a broken
    pipe, and its last words still reach the file."""
    from finetune.proc import guarded_command

    copy = tmp_path / "train.log"
    code = ("import sys, time\n"
            "for i in range(2000): print('x' * 200, file=sys.stderr)\n"  # more than a pipe buffer
            "raise SystemExit('the end')\n")
    r, w = os.pipe()
    os.close(r)  # nobody reads
    proc = subprocess.Popen(guarded_command([sys.executable, "-c", code], stderr_copy=copy), cwd=ROOT, stderr=w)
    os.close(w)
    assert proc.wait(timeout=60) == 1
    text = copy.read_text(encoding="utf-8")
    assert text.count("x" * 200) == 2000 and text.rstrip().endswith("the end")


def test_only_our_runs_and_their_evaluations_get_a_trainer_log(tmp_path):
    from finetune.layout import Layout
    from finetune.llama_factory.board_patches import trainer_log_for

    layout = Layout.from_env(root=tmp_path, env={})
    run = layout.run_dir("20260101-000000")
    run.mkdir(parents=True)
    assert trainer_log_for(layout, ["llamafactory-cli", "train", str(run / "training_args.yaml")]) == \
        layout.logs_dir / "20260101-000000" / "train.log"
    (run / "eval_1").mkdir()
    assert trainer_log_for(layout, ["llamafactory-cli", "train", str(run / "eval_1" / "training_args.yaml")]) == \
        layout.logs_dir / "20260101-000000" / "eval_1.eval.log"
    (run / "eval_1" / "deeper").mkdir()
    assert trainer_log_for(layout, ["llamafactory-cli", "train",
                                    str(run / "eval_1" / "deeper" / "training_args.yaml")]) is None
    assert trainer_log_for(layout, ["llamafactory-cli", "train", str(tmp_path / "saves" / "training_args.yaml")]) is None
    assert trainer_log_for(layout, ["llamafactory-cli", "webui"]) is None
