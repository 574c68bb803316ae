"""Child processes the kit starts (Web UI, trainers): started in their own process group, logged
to a UTF-8 file, and stopped as a whole tree on every OS (no orphans after Ctrl-C, a closed
terminal, or a UI process that died).

* :func:`popen_group` starts the Web UI in its own process group / session.
* :func:`stop_tree` stops a process and everything below it; when the root is already gone it
  still stops the rest of its process group and any pids the caller remembered.
* :func:`guarded_command` wraps a trainer's command in ``python -m finetune.proc guard``: a small
  parent that forwards stop signals to the trainer and stops it when the process that started it
  (the Web UI) dies. Portable (a poll, no ``PR_SET_PDEATHSIG``, which fires when the *thread*
  that forked exits, and gradio runs handlers in pool threads).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

IS_WINDOWS = sys.platform == "win32"
GUARD_POLL_S = 0.5
STOP_GRACE_S = 10.0


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


def _group_members(pgid: int) -> list:
    """Live processes of process group ``pgid`` (POSIX; [] elsewhere or when it cannot be listed)."""
    if IS_WINDOWS:
        return []
    import psutil

    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.pid != os.getpid():
                out.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error, OSError):
            continue
    return out


def snapshot(pid: int) -> list[tuple[int, float]]:
    """``(pid, create_time)`` of ``pid`` and its descendants now; handed to :func:`stop_tree` later
    so that processes orphaned by a dead root are still found (and recycled pids are not)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    out = []
    for p in procs:
        try:
            out.append((p.pid, p.create_time()))
        except psutil.Error:
            continue
    return out


def stop_tree(pid: int, timeout: float = STOP_GRACE_S, known: Iterable[tuple[int, float]] = ()) -> list[int]:
    """Stop ``pid`` and all its descendants: polite signal first (SIGTERM / CTRL_BREAK), then kill.

    ``pid`` is the leader of its own process group (:func:`popen_group`), so when it is already
    gone its group is still signalled; ``known`` (from :func:`snapshot`) adds processes that were
    below it earlier (trainers re-parented after the UI died). Returns the pids that had to be
    killed. Safe to call on a process that is already gone.
    """
    import psutil

    tree: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            tree[p.pid] = p
    except psutil.NoSuchProcess:
        root = None
    for kpid, created in known:
        if kpid in tree:
            continue
        try:
            p = psutil.Process(kpid)
            if abs(p.create_time() - created) < 1.0:
                tree[kpid] = p
                for c in p.children(recursive=True):
                    tree.setdefault(c.pid, c)
        except psutil.Error:
            continue
    for p in _group_members(pid) if root is None else ():
        tree.setdefault(p.pid, p)
    if IS_WINDOWS:
        if root is not None:
            try:
                os.kill(pid, signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            except OSError:
                pass
            # the grace a POSIX SIGTERM gets: time to save a checkpoint before TerminateProcess below
            _, still = psutil.wait_procs(list(tree.values()), timeout=timeout)
            tree = {p.pid: p for p in still}
    else:
        try:
            os.killpg(pid, signal.SIGTERM)  # the group keeps its id after the leader is gone
        except (ProcessLookupError, PermissionError, OSError):
            pass
    for p in tree.values():  # children that left the group (e.g. trainers in their own session)
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(tree.values()), timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in alive]


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a (UTF-8) log file, or '' if there is none."""
    from finetune.fileio import tail_lines

    try:
        return "\n".join(tail_lines(path, lines, max_bytes=64_000))
    except OSError:
        return ""


# ---- the trainer guard ---------------------------------------------------------------------------
def guarded_command(cmd: Sequence[str], parent_pid: int | None = None, stderr_copy: Path | None = None) -> list[str]:
    """``cmd`` run under :func:`guard`: stopped when ``parent_pid`` (default: this process) dies; with
    ``stderr_copy`` its stderr is also appended to that file."""
    copy = ["--stderr-copy", str(stderr_copy)] if stderr_copy is not None else []
    return [sys.executable, "-m", "finetune.proc", "guard", str(parent_pid or os.getpid()), *copy, "--", *cmd]


def _pump(src: int, copy_path: Path) -> None:
    """Copy the child's stderr to ours (while anyone reads it) and to ``copy_path`` (always), chunk by
    chunk, until the child closes it. A closed or broken stderr of ours never stops the draining."""
    ours = getattr(sys.stderr, "buffer", None)
    copy_path.parent.mkdir(parents=True, exist_ok=True)
    with copy_path.open("ab") as copy:
        while True:
            try:
                chunk = os.read(src, 65536)
            except OSError:
                return
            if not chunk:
                return
            copy.write(chunk)
            copy.flush()
            if ours is not None:
                try:
                    ours.write(chunk)
                    ours.flush()
                except (OSError, ValueError):
                    ours = None  # the reader (the Web UI) is gone: keep the file copy only


def _parent_alive(pid: int, created: float | None) -> bool:
    if not IS_WINDOWS and os.getppid() != pid:  # re-parented: the parent is gone
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if created is not None and abs(proc.create_time() - created) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def guard(parent_pid: int, cmd: Sequence[str], stderr_copy: Path | None = None) -> int:
    """Run ``cmd`` (same stdin/stdout/stderr); forward SIGTERM / SIGINT / SIGHUP / SIGABRT / CTRL_BREAK
    to it; stop it (and its children) when ``parent_pid`` dies. Returns its exit code. With
    ``stderr_copy`` the child's stderr also goes to that file (LlamaBoard keeps a trainer's traceback
    only in memory: the file lets ``invoke runs`` and the Runs tab say why a run failed)."""
    import psutil

    try:
        created: float | None = psutil.Process(parent_pid).create_time()
    except psutil.Error:
        return 1  # the parent died before we started: nothing to run for
    kwargs: dict = {}
    if IS_WINDOWS:
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    started: list[subprocess.Popen] = []
    pending: list[int] = []  # a stop that came before the trainer existed

    def forward(signum, _frame):
        if not started:
            pending.append(signum)
            return
        try:
            if IS_WINDOWS:
                started[0].send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            else:
                started[0].send_signal(signum)
        except OSError:
            pass

    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGABRT", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                signal.signal(sig, forward)
            except (OSError, ValueError):
                pass
    if pending:
        return 128 + pending[0]
    if stderr_copy is not None:
        kwargs["stderr"] = subprocess.PIPE
    child = subprocess.Popen(list(cmd), **kwargs)
    started.append(child)
    pump = None
    if stderr_copy is not None:
        import threading

        pump = threading.Thread(target=_pump, args=(child.stderr.fileno(), Path(stderr_copy)), daemon=True)
        pump.start()
    if pending:
        forward(pending[0], None)
    while True:
        try:
            rc = child.wait(timeout=GUARD_POLL_S)
            if pump is not None:
                pump.join(timeout=10)  # the last lines (the traceback) reach both copies
            return rc if rc >= 0 else 128 - rc
        except subprocess.TimeoutExpired:
            pass
        if not _parent_alive(parent_pid, created):
            try:  # stderr may be a pipe the dead UI read: a closed pipe must not stop the guard
                print(f"[finetune] the Web UI (PID {parent_pid}) is gone: stopping trainer PID {child.pid}",
                      file=sys.stderr, flush=True)
            except OSError:
                pass
            stop_tree(child.pid, timeout=STOP_GRACE_S)
            try:
                return child.wait(timeout=5) or 1
            except subprocess.TimeoutExpired:
                return 1


def _main(argv: Sequence[str]) -> int:
    if len(argv) >= 3 and argv[0] == "guard" and "--" in argv:
        sep = list(argv).index("--")
        opts = list(argv[2:sep])
        copy = Path(opts[1]) if len(opts) == 2 and opts[0] == "--stderr-copy" else None
        if opts and copy is None:
            print(f"unknown guard options: {opts}", file=sys.stderr)
            return 2
        return guard(int(argv[1]), list(argv[sep + 1:]), stderr_copy=copy)
    print("usage: python -m finetune.proc guard PARENT_PID [--stderr-copy FILE] -- COMMAND ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
