"""Child processes the kit starts (Web UI, trainers): started in their own process group, logged
to a UTF-8 file, and stopped as a whole tree on every OS (no orphans after Ctrl-C)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

IS_WINDOWS = sys.platform == "win32"


def popen_group(cmd: Sequence[str], log_path: Path | None = None, env: Mapping[str, str] | None = None,
                cwd: Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` (no shell) in a new process group / session, output appended to ``log_path``."""
    kwargs: dict = {}
    if IS_WINDOWS:
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        kwargs["start_new_session"] = True
    out = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = log_path.open("ab")
    full_env = {**os.environ, **(env or {}), "PYTHONIOENCODING": "utf-8", "PYTHONUTF8": "1"}
    try:
        return subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, cwd=cwd, **kwargs)
    finally:
        if out is not subprocess.DEVNULL:
            out.close()


def stop_tree(pid: int, timeout: float = 10.0) -> list[int]:
    """Stop ``pid`` and all its descendants: polite signal first (SIGTERM / CTRL_BREAK), then kill.

    Returns the pids that had to be killed. Safe to call on a process that is already gone.
    """
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    tree = [root, *root.children(recursive=True)]
    if IS_WINDOWS:
        try:
            os.kill(pid, signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        except OSError:
            pass
    else:
        try:
            os.killpg(os.getpgid(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    for p in tree:  # children that left the group (e.g. trainers in their own session)
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in alive]


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a (UTF-8) log file, or '' if there is none."""
    try:
        data = path.read_bytes()[-64_000:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])
