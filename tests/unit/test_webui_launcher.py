"""Launcher checks that need no LLaMA-Factory: host/auth policy, port choice, the PID file, the CLI's
refusals and its install guidance from a Python without LLaMA-Factory (light: no torch here)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.errors import UserError
from finetune.llama_factory import launcher

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "finetune" / "llama_factory" / "launcher.py"


@pytest.fixture()
def held_port():
    """A port held (listening) by this test process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- host and auth ------------------------------------------------------------------------------
@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                       ("0.0.0.0", False), ("192.168.1.5", False), ("::", False),
                                       ("example.org", False)])
def test_is_loopback(host, loop):
    assert launcher.is_loopback(host) is loop


def test_non_loopback_without_auth_is_refused():
    with pytest.raises(UserError) as info:
        launcher.resolve_auth("0.0.0.0", "env", None, None, env={})
    err = info.value
    assert "0.0.0.0" in err.message and "--auth-user" in err.fix


def test_non_loopback_with_user_generates_password_once():
    user, password, generated = launcher.resolve_auth("0.0.0.0", "env", "alice", None, env={})
    assert (user, generated) == ("alice", True) and len(password) >= 12
    assert launcher.resolve_auth("0.0.0.0", "env", None, None,
                                 env={"FINETUNE_WEBUI_USER": "bob", "FINETUNE_WEBUI_PASSWORD": "pw"}) == ("bob", "pw", False)


def test_loopback_needs_no_auth_and_cli_method_cannot_serve_network():
    assert launcher.resolve_auth("127.0.0.1", "env", None, None, env={}) is None
    with pytest.raises(UserError, match="no login"):
        launcher.resolve_auth("0.0.0.0", "cli", "alice", "pw", env={})


def test_cli_refuses_network_host_without_auth_and_no_traceback(tmp_path):
    env = {**os.environ, "FINETUNE_ROOT": str(tmp_path)}
    env.pop("FINETUNE_WEBUI_USER", None)
    out = subprocess.run([sys.executable, str(SCRIPT), "--host", "0.0.0.0"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode != 0
    assert "refusing to listen on 0.0.0.0" in out.stderr and "fix:" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "finetune" / "state" / "llamaboard" / "webui.pid.json").exists()


# ---- ports --------------------------------------------------------------------------------------
def test_free_port_is_kept():
    port = _free_port()
    assert launcher.choose_port("127.0.0.1", port) == (port, "")


def test_busy_port_moves_to_the_next_and_says_so(held_port):
    port, note = launcher.choose_port("127.0.0.1", held_port)
    assert port > held_port and launcher.port_free("127.0.0.1", port)
    assert f"port {held_port} is taken" in note and f"using port {port} instead" in note


def test_strict_port_fails_naming_the_holder(held_port):
    with pytest.raises(UserError) as info:
        launcher.choose_port("127.0.0.1", held_port, strict=True)
    assert str(held_port) in info.value.message
    if sys.platform.startswith("linux"):  # the OS tells us who holds it (our own process here)
        assert f"PID {os.getpid()}" in info.value.message


def test_poll_host_for_wildcards():
    assert launcher._poll_host("0.0.0.0") == "127.0.0.1"
    assert launcher._poll_host("::") == "[::1]"
    assert launcher._poll_host("127.0.0.1") == "127.0.0.1"


# ---- environment for the child ------------------------------------------------------------------
def test_child_env_is_safe_and_points_at_the_layout(layout):
    env = launcher.build_env(layout, "env", "127.0.0.1", 7861, False, "qwen", None,
                             base={"PATH": "/usr/bin", "NO_PROXY": "corp"})
    assert env["GRADIO_SERVER_NAME"] == "127.0.0.1" and env["GRADIO_SERVER_PORT"] == "7861"
    assert env["GRADIO_SHARE"] == "0" and env["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert env["FINETUNE_WEBUI_DATA_DIR"] == str(layout.data_dir)
    assert env["FINETUNE_WEBUI_SAVE_DIR"] == str(layout.outputs_dir)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)  # llamafactory-cli for trainers
    assert env["NO_PROXY"].startswith("corp,") and "127.0.0.1" in env["NO_PROXY"]
    assert "FINETUNE_WEBUI_PASSWORD" not in env
    cli_env = launcher.build_env(layout, "cli", "127.0.0.1", 7861, True, None, None, base={})
    assert cli_env["GRADIO_SHARE"] == "1" and "FINETUNE_WEBUI_DATA_DIR" not in cli_env


def test_commands_for_both_methods():
    assert launcher.build_command("cli")[1:] == ["-m", "llamafactory.cli", "webui"]
    assert launcher.build_command("env")[1:] == ["-m", "finetune.llama_factory.board"]
    assert all(cmd[0] == sys.executable for cmd in (launcher.build_command("cli"), launcher.build_command("env")))


# ---- PID file -----------------------------------------------------------------------------------
def test_status_without_pid_file(layout):
    assert launcher.status(layout)["running"] is False
    assert launcher.stop(layout)["stopped"] is False


def test_stale_pid_file_is_removed(layout):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    layout.state_dir.mkdir(parents=True)
    layout.pid_file.write_text(json.dumps({"pid": proc.pid, "create_time": 0, "url": "http://x"}), encoding="utf-8")
    st = launcher.status(layout)
    assert st["running"] is False and st["stale"] is True
    assert not layout.pid_file.exists()


def test_status_and_stop_a_live_process_tree(layout):
    """--status sees the process in the PID file, --stop ends it and its children."""
    import psutil

    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    from finetune.proc import popen_group

    proc = popen_group([sys.executable, "-c", code])
    try:
        parent = psutil.Process(proc.pid)
        for _ in range(50):
            if parent.children():
                break
            import time

            time.sleep(0.1)
        child_pids = [c.pid for c in parent.children(recursive=True)]
        assert child_pids
        layout.state_dir.mkdir(parents=True)
        layout.pid_file.write_text(json.dumps({"pid": proc.pid, "create_time": parent.create_time(),
                                               "url": "http://127.0.0.1:1/", "run_id": "r"}), encoding="utf-8")
        st = launcher.status(layout)
        assert st["running"] is True and st["pid"] == proc.pid
        res = launcher.stop(layout, timeout=5)
        assert res["stopped"] is True and set(child_pids) <= set(res["processes"])
        proc.wait(timeout=5)
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                       for p in child_pids)
        assert not layout.pid_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_status_cli_says_nothing_runs(tmp_path):
    env = {**os.environ, "FINETUNE_ROOT": str(tmp_path)}
    out = subprocess.run([sys.executable, str(SCRIPT), "--status", "--json"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 1 and json.loads(out.stdout)["running"] is False


# ---- a Python without LLaMA-Factory -------------------------------------------------------------
@pytest.fixture(scope="module")
def python_without_llamafactory(tmp_path_factory) -> str:
    """A fresh `python -m venv` (no site packages at all): certainly no llamafactory."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    venv = tmp_path_factory.mktemp("nolf") / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    exe = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    probe = subprocess.run([str(exe), "-c", "import importlib.util as u; print(u.find_spec('llamafactory'))"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "None", probe
    return str(exe)


def test_without_llamafactory_prints_install_guidance(python_without_llamafactory, tmp_path):
    env = {**os.environ, "FINETUNE_ROOT": str(tmp_path)}
    env.pop("PYTHONPATH", None)
    out = subprocess.run([python_without_llamafactory, str(SCRIPT), "--port", str(_free_port())],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 3, out
    assert "LLaMA-Factory is not installed" in out.stderr
    assert "pip install" in out.stderr and "llamafactory" in out.stderr.lower()
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "finetune" / "state" / "llamaboard" / "webui.pid.json").exists()


def test_unsupported_version_is_named(monkeypatch):
    import importlib.metadata
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.8.1")
    with pytest.raises(UserError, match="0.8.1 is not supported"):
        launcher.check_dependencies()


def test_help_lists_every_flag():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    for flag in ("--host", "--port", "--strict-port", "--method", "--model", "--template", "--share",
                 "--auth-user", "--auth-password-file", "--timeout", "--status", "--stop", "--dataset", "--run-id"):
        assert flag in out.stdout
    assert "--auth-password " not in out.stdout  # a password never goes on a command line


def test_a_port_outside_the_tcp_range_is_refused_with_the_fix():
    with pytest.raises(UserError) as err:
        launcher.choose_port("127.0.0.1", 70000)
    assert err.value.where == "--port" and "1 to 65535" in err.value.message and err.value.fix
