"""The launcher with the real LLaMA-Factory Web UI on loopback: every patched internal present on
the pinned version, both start methods, the busy-port move, the pre-fill seen in the page's config,
status/stop through the PID file, `--stop` from another shell reported as a stop, and Ctrl-C /
SIGTERM / SIGHUP to the launcher process leaving no process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from webui_support import write_dataset

pytestmark = [pytest.mark.smoke, pytest.mark.timeout(600)]
pytest.importorskip("llamafactory")
httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")

from finetune.llama_factory import launcher  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "finetune" / "llama_factory" / "launcher.py"
MODULE = [sys.executable, "-m", "finetune.llama_factory.launcher"]


def test_every_patched_internal_is_where_it_was_verified():
    """Fails when an upgrade of LLaMA-Factory (or gradio) moves anything the board patches touch."""
    from importlib.metadata import version

    from finetune.llama_factory import board, board_patches

    assert version("llamafactory") in board.INTERNALS_VERIFIED, "a new LLaMA-Factory: re-verify the patches"
    problems = board_patches.check_all()
    assert set(problems) == {p.name for p in board_patches.PATCHES}
    assert not any(problems.values()), problems
    out = subprocess.run([sys.executable, "-m", "finetune.llama_factory.board_patches"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.count(" ok") == len(board_patches.PATCHES), out.stdout + out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _page_values(url: str) -> list:
    """Initial values of the page's components, from gradio's /config."""
    cfg = httpx.Client(trust_env=False, timeout=10).get(url + "config").json()
    return [c.get("props", {}).get("value") for c in cfg.get("components", [])]


def _gone(pids) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def test_env_method_busy_port_prefill_status_and_stop(layout, tiny_model):
    dataset = write_dataset(layout)
    holder = socket.socket()
    holder.bind(("127.0.0.1", _free_port()))
    holder.listen(1)
    busy = holder.getsockname()[1]
    said: list[str] = []
    try:
        handle = launcher.start(layout, port=busy, model=tiny_model, template="qwen", say=said.append,
                                spinner=False)
    finally:
        holder.close()
    try:
        assert handle.port != busy and handle.url.endswith(f":{handle.port}/")
        assert any(f"port {busy} is taken" in s and f"using port {handle.port}" in s for s in said), said
        assert httpx.Client(trust_env=False).get(handle.url).status_code == 200
        values = _page_values(handle.url)
        assert str(layout.data_dir) in values  # Data dir points at our layout when the page opens
        assert handle.log_path == launcher.log_path_for(layout)
        log = handle.log_path.read_text(encoding="utf-8")
        assert "Running on local URL" in log and "10/10 patches applied" in log, log
        # Nothing for a run until Start: no run folder, no log folder.
        assert not layout.run_dir(handle.run_id).exists() and not layout.logs_dir.exists()
        # LlamaBoard's state folders are in the layout, not in the cwd of this test.
        assert (layout.webui_cache_dir / "ds_z2_config.json").is_file()
        assert not (Path.cwd() / "llamaboard_cache").exists() or Path.cwd() == layout.state_dir
        assert (layout.webui_config_dir / handle.arg_set).is_file() and dataset

        st = launcher.status(layout)
        assert st["running"] and st["pid"] == handle.pid and st["url"] == handle.url
        with pytest.raises(Exception, match="already running"):
            launcher.start(layout, port=_free_port(), spinner=False, say=None)
        tree = [handle.pid, *[c["pid"] for c in handle.children()]]
        res = launcher.stop(layout)
        assert res["stopped"] and res["pid"] == handle.pid
        assert _gone(tree) and not layout.pid_file.exists()
    finally:
        handle.stop()


def test_cli_method_runs_llamafactorys_own_entry_in_our_state_dir(layout):
    handle = launcher.start(layout, port=_free_port(), method="cli", spinner=False, say=None)
    try:
        proc = psutil.Process(handle.pid)
        assert proc.cmdline()[1:] == ["-m", "llamafactory.cli", "webui"]
        assert Path(proc.cwd()) == layout.state_dir
        assert (layout.webui_cache_dir / "ds_z2_config.json").is_file()
        # Listens on loopback only, whatever LLaMA-Factory's default (0.0.0.0) is.
        listening = {c.laddr.ip for c in psutil.net_connections("tcp")
                     if c.laddr and c.laddr.port == handle.port and c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}, listening
        assert "data" in _page_values(handle.url)  # its own default Data dir (relative to state_dir)
    finally:
        pids = handle.stop()
    assert pids and _gone(pids)


def _launch(tmp_path, *extra: str):
    env = {**os.environ, "FINETUNE_ROOT": str(tmp_path)}
    out_path = tmp_path / "launcher.out"
    with out_path.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen([*MODULE, "--port", str(_free_port()), *extra], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + 240
    while "is ready" not in out_path.read_text(encoding="utf-8"):
        assert proc.poll() is None, out_path.read_text(encoding="utf-8")
        assert time.monotonic() < deadline, out_path.read_text(encoding="utf-8")
        time.sleep(0.3)
    return proc, out_path, env


def test_stop_from_another_shell_is_reported_as_a_stop(tmp_path):
    proc, out_path, env = _launch(tmp_path)
    try:
        tree = [proc.pid, *[p.pid for p in psutil.Process(proc.pid).children(recursive=True)]]
        res = subprocess.run([*MODULE, "--stop"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert res.returncode == 0 and "stopped the Web UI" in res.stdout, res
        assert proc.wait(timeout=60) == 0
        text = out_path.read_text(encoding="utf-8")
        assert "was stopped (invoke webui --stop)" in text, text
        assert "exited" not in text and "last lines" not in text and "Traceback" not in text, text
        assert _gone(tree)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_to_the_launcher_leaves_no_process_behind(tmp_path, sig):
    if sys.platform == "win32":
        pytest.skip("POSIX signals; Windows uses CTRL_BREAK (same code path)")
    env = {**os.environ, "FINETUNE_ROOT": str(tmp_path)}
    out_path = tmp_path / "launcher.out"
    with out_path.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen([*MODULE, "--port", str(_free_port())], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while "is ready" not in out_path.read_text(encoding="utf-8"):
            assert proc.poll() is None, out_path.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, out_path.read_text(encoding="utf-8")
            time.sleep(0.3)
        tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert tree
        os.kill(proc.pid, getattr(signal, sig))
        assert proc.wait(timeout=60) == 0
        text = out_path.read_text(encoding="utf-8")
        assert "stopped the Web UI" in text and "Traceback" not in text
        assert _gone(tree), [p for p in tree if psutil.pid_exists(p)]
        assert not (tmp_path / "finetune" / "state" / "llamaboard" / "webui.pid.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
