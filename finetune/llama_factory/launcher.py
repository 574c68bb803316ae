"""Start LLaMA-Factory's Web UI (LlamaBoard) safely, ready to train on open, and stop it cleanly.

    python -m finetune.llama_factory.launcher [--port 7860] [--model PATH --template qwen] [--dataset NAME]
    invoke webui [...]            invoke webui --status            invoke webui --stop

* One command line: :class:`WebUIOptions` defines every flag once; ``invoke webui`` and the module
  entry both build it and call :func:`run`.
* Safe by default: binds 127.0.0.1; another host needs gradio auth (user from ``--auth-user`` or
  ``FINETUNE_WEBUI_USER``; password from ``FINETUNE_WEBUI_PASSWORD`` / ``--auth-password-file`` or
  generated and printed once; it reaches the UI through a 0600 file, never a command line) and
  prints a warning. Share links off unless ``--share``; gradio analytics off.
* Port: the requested one, else the next free one (said plainly); ``--strict-port`` fails instead
  and names the process that holds it where the OS allows. A port held only by TIME_WAIT sockets
  is free (tested the way the server binds).
* Two ways to start (``--method``): ``env`` (default) runs ``python -m finetune.llama_factory.board``,
  which applies the guarded patches of :mod:`~finetune.llama_factory.board_patches` (form filled on
  open, a new run per Start, our runs in Chat / Evaluate / Export, a Runs tab); ``cli`` runs
  LLaMA-Factory's own entry (``python -m llamafactory.cli webui``) with gradio's settings in the
  environment. Both run in ``layout.state_dir`` so LlamaBoard's state folders sit at a fixed place.
* Nothing is created for a run until Start: the Output dir proposes a fresh run id; the UI's log
  (and its trainers' output) is ``<state>/webui.log``.
* Readiness: waits for HTTP 200, then prints URL, PID, log path, datasets, template and next step.
* Lifecycle: Ctrl-C / SIGTERM / SIGHUP (CTRL_BREAK on Windows) stops the UI and every trainer it
  started, also trainers left behind by a UI that died; ``invoke webui --stop`` from another shell
  is reported here as a stop (exit 0). A PID file (``layout.pid_file``) serves ``--status`` / ``--stop``.

Light at import (standard library + our light modules): the dependency check runs before anything
else, so a Python without LLaMA-Factory gets install guidance, not a traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a script: make the kit importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from finetune.env.platforms import LLAMAFACTORY_VERSION  # noqa: E402
from finetune.env.portable import path_with_scripts  # noqa: E402
from finetune.errors import UserError  # noqa: E402
from finetune.layout import Layout  # noqa: E402
from finetune.net import port_free, port_owner  # noqa: E402
from finetune.rundir import pid_alive  # noqa: E402

KIT_ROOT = Path(__file__).resolve().parents[2]
METHODS = ("env", "cli")
METHOD_ALIASES = {"env": "env", "b": "env", "cli": "cli", "a": "cli", "llamafactory": "cli"}
SUPPORTED = ((0, 9, 3), (0, 10, 0))  # [min, max) LLaMA-Factory versions the launcher accepts
TESTED_VERSION = LLAMAFACTORY_VERSION
PORT_SCAN = 100  # how far to look for a free port
LOG_NAME = "webui.log"
Say = Callable[[str], None]


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- dependency check --------------------------------------------------------------------------
def _parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def _startup_failure(rc: int, log_path: Path) -> UserError:
    """The Web UI died before it was ready: say why when its log shows a known cause (guide 8.9)."""
    from finetune import fileio
    from finetune.env import doctor, platforms

    try:
        lines = fileio.tail_lines(log_path, 400, max_bytes=256_000)  # one read: the cause and the last lines
    except OSError:
        lines = []
    details = ["last lines of its log:", *lines[-25:]]
    if cause := doctor.torch_set_failure(lines):
        return UserError(f"the Web UI exited with code {rc} before it was ready: torch, torchvision and torchaudio "
                         f"do not load together ({cause})", where=str(log_path), details=details,
                         fix=f"invoke doctor shows the set; reinstall it as one: {platforms.reinstall_set_command()}")
    return UserError(f"the Web UI exited with code {rc} before it was ready", where=str(log_path), details=details,
                     fix="read the log above; `invoke doctor` checks the installation")


def check_dependencies() -> str:
    """LLaMA-Factory (and gradio) importable here, in a supported version. Returns its version."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    from finetune.env import platforms

    fix = platforms.install_command()
    where = f"Python {sys.executable}"
    if importlib.util.find_spec("llamafactory") is None:
        raise UserError("LLaMA-Factory is not installed in this Python, so the Web UI cannot start",
                        where=where, fix=fix, exit_code=3,
                        details=[f"it comes with the kit's [train] extra: llamafactory=={TESTED_VERSION} plus a "
                                 "torch / torchvision / torchaudio set that loads together",
                                 "the launcher never installs anything; run the command below, then retry"])
    try:
        lf_version = version("llamafactory")
    except PackageNotFoundError:
        lf_version = "0"
    if not (SUPPORTED[0] <= _parse_version(lf_version) < SUPPORTED[1]):
        raise UserError(f"LLaMA-Factory {lf_version} is not supported (the launcher needs >=0.9.3,<0.10; "
                        f"tested with {TESTED_VERSION})", where=where, exit_code=3,
                        fix=f"python -m pip install llamafactory=={TESTED_VERSION}")
    if importlib.util.find_spec("gradio") is None:
        raise UserError("gradio is not installed (LLaMA-Factory's Web UI needs it)", where=where, exit_code=3,
                        fix=fix)
    return lf_version


# ---- host, auth, port --------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_auth(host: str, method: str, user: str | None, password: str | None,
                 env: Mapping[str, str] | None = None) -> tuple[str, str, bool] | None:
    """Auth for a non-loopback host: (user, password, generated). None on loopback without a user."""
    from finetune.llama_factory import board

    env = os.environ if env is None else env
    user = user or env.get(board.ENV_AUTH_USER) or None
    password = password or env.get(board.ENV_AUTH_PASSWORD) or None
    if is_loopback(host) and not user:
        return None
    if not user:
        raise UserError(f"refusing to listen on {host} without a login: anyone who can reach this machine "
                        "could start training jobs and read its files", where="--host",
                        fix=f"invoke webui --host {host} --auth-user NAME  (password from "
                            f"{board.ENV_AUTH_PASSWORD} or generated), or leave --host out for 127.0.0.1")
    if method == "cli":
        raise UserError("LLaMA-Factory's own entry (--method cli) has no login; it cannot serve "
                        f"{host} safely", where="--method", fix=f"invoke webui --host {host} --method env --auth-user {user}")
    generated = not password
    return user, password or secrets.token_urlsafe(12), generated


def choose_port(host: str, port: int, strict: bool = False) -> tuple[int, str]:
    """The port to use and a plain note when it is not the requested one."""
    if not 1 <= port <= 65535:
        raise UserError(f"{port} is not a TCP port (1 to 65535)", where="--port", fix="invoke webui --port 7860")
    if port_free(host, port):
        return port, ""
    owner = port_owner(port)
    if strict:
        raise UserError(f"port {port} on {host} is taken by {owner}", where="--port",
                        fix=f"stop that process, or run: invoke webui --port {port + 1}  (or drop --strict-port "
                            "to take the next free port)")
    for candidate in range(port + 1, min(port + 1 + PORT_SCAN, 65536)):
        if port_free(host, candidate):
            return candidate, f"port {port} is taken by {owner}; using port {candidate} instead"
    raise UserError(f"no free port between {port} and {port + PORT_SCAN} on {host}", where="--port",
                    fix="invoke webui --port 20000")


def _poll_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# ---- the PID file ------------------------------------------------------------------------------
def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    from finetune.llama_factory.board import write_atomic

    write_atomic(path, json.dumps(dict(data), indent=2, ensure_ascii=False) + "\n")


def _read_pid_file(layout: Layout) -> dict | None:
    try:
        data = json.loads(layout.pid_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(info: Mapping[str, Any]) -> bool:
    return pid_alive(info.get("pid"), info.get("create_time"))


def _tree(pid: int) -> list[dict]:
    import psutil

    out = []
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return out
    for proc in procs:
        try:
            out.append({"pid": proc.pid, "cmd": " ".join(proc.cmdline()[:4])})
        except psutil.Error:
            continue
    return out


def status(layout: Layout) -> dict:
    """What the PID file says, checked against the running processes (stale files are removed)."""
    info = _read_pid_file(layout)
    if info is None:
        return {"running": False, "pid_file": str(layout.pid_file)}
    if not _alive(info):
        layout.pid_file.unlink(missing_ok=True)
        return {"running": False, "stale": True, "pid_file": str(layout.pid_file), **info}
    children = _tree(int(info["pid"]))
    trainers = [c for c in children if " train" in c["cmd"] or "llamafactory" in c["cmd"]]
    return {"running": True, "pid_file": str(layout.pid_file), **info, "trainers": trainers}


def stop(layout: Layout, timeout: float = 15.0) -> dict:
    """Stop the UI named in the PID file and every process it started. The PID file is marked
    first, so the launcher that serves this UI reports a requested stop (exit 0), not a crash."""
    from finetune.fileio import update_json
    from finetune.proc import snapshot, stop_tree

    st = status(layout)
    if not st["running"]:
        return {"stopped": False, "reason": "no Web UI is running for this layout", **st}
    pid = int(st["pid"])
    known = snapshot(pid)
    try:
        update_json(layout.pid_file, lambda d: {**(d if isinstance(d, dict) else {}), "stop_requested": time.time(),
                                                "stopped_by": os.getpid()}, default={})
    except UserError:
        pass
    killed = stop_tree(pid, timeout=timeout, known=known)
    layout.pid_file.unlink(missing_ok=True)
    return {"stopped": True, "pid": pid, "processes": [p for p, _ in known], "killed": killed, "url": st.get("url")}


# ---- start / serve -----------------------------------------------------------------------------
@dataclass
class WebUIHandle:
    """A running Web UI started by :func:`start`."""

    url: str
    pid: int
    run_id: str  # the run id the Output dir proposes (nothing is created until Start)
    log_path: Path
    host: str
    port: int
    method: str
    layout: Layout
    arg_set: str = ""
    output_dir: str = ""
    datasets: list[str] = field(default_factory=list)
    template: str | None = None
    auth_user: str | None = None
    notes: list[str] = field(default_factory=list)
    process: Any = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def children(self) -> list[dict]:
        return _tree(self.pid)

    def stop(self, timeout: float = 15.0, known: list[tuple[int, float]] | None = None) -> list[int]:
        """Stop the UI and every trainer it started (``known``: processes seen below it earlier,
        for when the UI itself is already gone); returns the pids that were running."""
        from finetune.proc import snapshot, stop_tree

        seen = {pid: t for pid, t in [*(known or []), *snapshot(self.pid)]}
        pids = [p for p in seen if _pid_running(p)]
        stop_tree(self.pid, timeout=timeout, known=list(seen.items()))
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except Exception:  # noqa: BLE001 - already reaped / still stuck: stop_tree killed it
                pass
        info = _read_pid_file(self.layout)
        if info and int(info.get("pid", -1)) == self.pid:
            self.layout.pid_file.unlink(missing_ok=True)
        return pids

    def __enter__(self) -> WebUIHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pid_running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def build_command(method: str) -> list[str]:
    if method == "cli":  # LLaMA-Factory's own entry, the Python equivalent of `llamafactory-cli webui`
        return [sys.executable, "-m", "llamafactory.cli", "webui"]
    return [sys.executable, "-m", "finetune.llama_factory.board"]


def build_env(layout: Layout, method: str, host: str, port: int, share: bool, template: str | None,
              auth: tuple[str, str, bool] | None, base: Mapping[str, str] | None = None,
              password_file: Path | None = None, defaults: Path | None = None) -> dict[str, str]:
    """The child's environment: gradio's settings, ours, PATH with this Python's scripts folder
    (LlamaBoard starts trainers as ``llamafactory-cli train``), and no proxy for loopback. The
    login password travels in ``password_file`` (mode 0600, deleted by the child), never in argv."""
    from finetune.llama_factory import board

    base = os.environ if base is None else base
    env: dict[str, str] = {
        "GRADIO_SERVER_NAME": host,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SHARE": "1" if share else "0",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PATH": path_with_scripts(base.get("PATH", "")),  # sysconfig's scripts folder (Windows: Scripts)
        "PYTHONPATH": os.pathsep.join(p for p in (str(KIT_ROOT), base.get("PYTHONPATH", "")) if p),
    }
    loop = "127.0.0.1,localhost,::1"
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = f"{base[key]},{loop}" if base.get(key) else loop
    if method == "env":
        env.update({
            board.ENV_HOST: host, board.ENV_PORT: str(port), board.ENV_SHARE: "1" if share else "0",
            board.ENV_DATA_DIR: str(layout.data_dir), board.ENV_SAVE_DIR: str(layout.outputs_dir),
            board.ENV_LAYOUT: json.dumps(layout.as_dict()),
        })
        if defaults is not None:
            env[board.ENV_DEFAULTS] = str(defaults)
        if template:
            env[board.ENV_TEMPLATE] = template
        if auth:
            env[board.ENV_AUTH_USER] = auth[0]
            if password_file is not None:
                env[board.ENV_AUTH_PASSWORD_FILE] = str(password_file)
    return env


def _password_file(layout: Layout, password: str) -> Path:
    """A file only this user can read, holding the password for the child (which deletes it)."""
    import tempfile

    layout.ensure(layout.state_dir)
    fd, name = tempfile.mkstemp(prefix=".webui-login-", dir=layout.state_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password)
    try:
        os.chmod(name, 0o600)
    except OSError:
        pass
    return Path(name)


def _wait_ready(proc, url: str, log_path: Path, timeout: float, spinner: bool) -> None:
    import httpx

    from finetune.proc import tail

    deadline = time.monotonic() + timeout
    status_cm = None
    if spinner and sys.stderr.isatty():
        from rich.console import Console

        status_cm = Console(stderr=True).status(f"starting the Web UI (waiting for {url}) ...")
        status_cm.__enter__()
    try:
        with httpx.Client(trust_env=False, timeout=3.0) as client:
            while True:
                rc = proc.poll()
                if rc is not None:
                    raise _startup_failure(rc, log_path)
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise UserError(f"the Web UI did not answer at {url} within {timeout:.0f} s", where=str(log_path),
                                    details=["last lines of its log:", *tail(log_path, 15).splitlines()],
                                    fix="invoke webui --timeout 600  (slow first start), or read the log")
                time.sleep(0.1)
    finally:
        if status_cm is not None:
            status_cm.__exit__(None, None, None)


def log_path_for(layout: Layout) -> Path:
    """The UI's log (its trainers' output too): in the state folder, so that a launch that trains
    nothing leaves no run id and no log folder behind."""
    return layout.state_dir / LOG_NAME


def start(layout: Layout, host: str = "127.0.0.1", port: int = 7860, strict_port: bool = False,
          method: str = "env", model: str | Path | None = None, template: str | None = None,
          run_id: str | None = None, share: bool = False, wait_timeout: float = 180,
          auth_user: str | None = None, auth_password: str | None = None,
          board_args: Mapping[str, Any] | None = None, say: Say | None = _err,
          spinner: bool = True, datasets: list[str] | None = None) -> WebUIHandle:
    """Start the Web UI in the background and return once it answers HTTP 200.

    ``board_args`` overrides values of the argument set the page opens with (element id -> value),
    e.g. ``{"train.max_samples": "16"}``. ``run_id`` names the proposed Output dir (default: a fresh
    id; nothing is created for it). ``say`` receives plain notes (moved port, generated password).
    """
    from finetune.llama_factory import board
    from finetune.proc import popen_group

    say = say or (lambda _msg: None)
    method = METHOD_ALIASES.get(str(method).lower(), "")
    if not method:
        raise UserError(f"unknown --method {method!r}", where="--method", fix="use --method env or --method cli")
    auth = resolve_auth(host, method, auth_user, auth_password)  # flag mistakes first, then the install
    check_dependencies()
    notes: list[str] = []
    if not is_loopback(host):
        notes.append(f"WARNING: the Web UI listens on {host}: everyone who can reach this machine sees the login "
                     "page; anyone with the password can start jobs and read files")
    if auth and auth[2]:
        notes.append(f"login: user {auth[0]!r}, generated password {auth[1]!r} (shown once; set "
                     f"{board.ENV_AUTH_PASSWORD} or --auth-password-file to choose it)")
    if share:
        notes.append("WARNING: --share asks gradio for a public link; anyone with it reaches the UI")

    running = status(layout)
    if running["running"]:
        raise UserError(f"a Web UI for this layout is already running at {running.get('url')} "
                        f"(PID {running.get('pid')})", where=str(layout.pid_file),
                        fix="invoke webui --stop  (or open the URL above)")

    run_id = run_id or layout.new_run()  # a name only: the folder is made when Start is pressed
    log_path = log_path_for(layout)
    layout.ensure(layout.state_dir, layout.data_dir)
    files = board.prepare(layout, run_id, model=model, template=template, overrides=board_args, datasets=datasets)
    if files.model and not files.template:
        notes.append(f"no template known for {files.model}: pass --template NAME once (it is remembered)")

    chosen, note = choose_port(host, port, strict_port)
    if note:
        notes.append(note)
    for msg in notes:
        say(msg)

    password_file = _password_file(layout, auth[1]) if auth and method == "env" else None
    env = build_env(layout, method, host, chosen, share, files.template, auth, password_file=password_file,
                    defaults=files.arg_set)
    if method == "env" and files.values.get("train.compute_type") == "bf16" and not (board_args or {}).get(
            "train.compute_type") and not os.environ.get("FINETUNE_COMPUTE_TYPE"):
        env[board.ENV_REFINE_ARG_SET] = str(files.arg_set)  # a guess: the child checks the card
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write(f"[finetune] {time.strftime('%Y-%m-%d %H:%M:%S')} starting the Web UI ({method}) on "
                 f"{host}:{chosen}\n")
    proc = popen_group(build_command(method), log_path=log_path, env=env, cwd=layout.state_dir)
    url = f"http://{_poll_host(host)}:{chosen}/"
    handle = WebUIHandle(url=url, pid=proc.pid, run_id=run_id, log_path=log_path, host=host, port=chosen,
                         method=method, layout=layout, arg_set=files.arg_set_name, output_dir=files.output_dir,
                         datasets=files.datasets, template=files.template,
                         auth_user=auth[0] if auth else None, notes=notes, process=proc)
    try:
        import psutil

        create_time = psutil.Process(proc.pid).create_time()
    except Exception:  # noqa: BLE001 - died at once: _wait_ready reports it
        create_time = time.time()
    _write_json_atomic(layout.pid_file, {
        "pid": proc.pid, "create_time": create_time, "url": url, "host": host, "port": chosen,
        "next_run_id": run_id, "log_path": str(log_path), "method": method, "launcher_pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "arg_set": files.arg_set_name,
    })
    try:
        _wait_ready(proc, url, log_path, wait_timeout, spinner)
    except BaseException:
        handle.stop(timeout=5)
        raise
    finally:
        if password_file is not None and password_file.exists() and not handle.alive():
            password_file.unlink(missing_ok=True)
    return handle


def ready_text(handle: WebUIHandle) -> str:
    lines = [
        f"LLaMA-Factory Web UI is ready: {handle.url}",
        f"  PID       {handle.pid}  (method {handle.method})",
        f"  log       {handle.log_path}",
        f"  datasets  {', '.join(handle.datasets) or '(none registered: invoke data.register FILE)'}",
        f"  template  {handle.template or '(LlamaBoard default; pass --template once)'}",
        f"  next run  {handle.output_dir}  (created when you press Start)",
    ]
    if handle.auth_user:
        lines.append(f"  login     user {handle.auth_user!r}")
    if handle.method == "env":
        lines.append("next: open the URL and press Start in the Train tab (the form is filled); the Runs tab "
                     "shows the run, Chat / Export list it under Checkpoint path.")
    else:
        lines.append("next: open the URL; in the Train tab pick Config path "
                     f"'{handle.arg_set}' and press 'Load arguments', then Start.")
    lines.append("      stop with Ctrl-C here (or `invoke webui --stop`); after training: `invoke runs`")
    return "\n".join(lines)


class _Stop(KeyboardInterrupt):
    """SIGTERM / SIGHUP / CTRL_BREAK turned into the same path as Ctrl-C."""


def _raise_stop(signum, _frame):
    raise _Stop(signum)


STOP_SIGNALS = ("SIGTERM", "SIGHUP", "SIGBREAK")  # SIGHUP: the terminal was closed


def serve(layout: Layout, out: Callable[[str], None] = print, **kwargs: Any) -> int:
    """Start the UI, print where it is, and block until Ctrl-C / SIGTERM / SIGHUP / CTRL_BREAK or until
    the UI exits. Stopping takes the UI and every trainer it started with it (also when the UI died
    on its own). Returns an exit code: 0 for a stop that was asked for."""
    from finetune.proc import snapshot

    old = {}
    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                old[sig] = signal.signal(sig, _raise_stop)
            except (ValueError, OSError):  # not the main thread
                pass
    handle = None
    known: dict[int, float] = {}
    try:
        handle = start(layout, **kwargs)
        out(ready_text(handle))
        while True:
            rc = handle.process.poll()
            if rc is not None:
                from finetune.proc import tail

                info = _read_pid_file(layout)
                requested = info is None or bool(info.get("stop_requested"))
                left = handle.stop(timeout=5, known=list(known.items()))
                if requested:  # `invoke webui --stop` from another shell
                    out(f"the Web UI was stopped (invoke webui --stop); log: {handle.log_path}")
                    return 0
                _err(f"the Web UI exited on its own with code {rc}"
                     + (f"; stopped {len(left)} process(es) it had started" if left else "")
                     + f"; last lines of {handle.log_path}:\n{tail(handle.log_path, 20)}")
                return rc or 1
            known.update(snapshot(handle.pid))
            time.sleep(0.5)
    except KeyboardInterrupt:
        if handle is None:  # interrupted during start: start() already stopped what it began
            _err("interrupted before the Web UI was ready; it was stopped (nothing left running)")
            return 130
        pids = handle.stop(known=list(known.items()))
        out(f"stopped the Web UI and {max(0, len(pids) - 1)} process(es) it started "
            f"(PIDs {', '.join(map(str, pids)) or '-'}); log: {handle.log_path}")
        return 0
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# ---- one command line --------------------------------------------------------------------------
def _flag(help: str, **extra: Any) -> Any:
    return field(default=extra.pop("default", None), metadata={"help": help, **extra})


@dataclass
class WebUIOptions:
    """Every flag of ``invoke webui`` and of ``python -m finetune.llama_factory.launcher``: the one
    definition both command lines map onto (names, defaults and help come from here)."""

    host: str = _flag("address to listen on (default 127.0.0.1); another host needs --auth-user (or "
                      "FINETUNE_WEBUI_USER)", default="127.0.0.1")
    port: int = _flag("port (default 7860); when taken, the next free one is used and named", default=7860)
    strict_port: bool = _flag("fail when the port is taken (naming the process that holds it) instead of moving",
                              default=False)
    method: str = _flag("env (default): our child Python, the form filled on open, a Runs tab; cli: "
                        "LLaMA-Factory's own `llamafactory-cli webui` entry (use Load arguments)", default="env")
    model: str | None = _flag("model folder to pre-fill (Model name 'Custom', Model path); default: the last one")
    template: str | None = _flag("chat template, e.g. qwen (remembered per model; default: the remembered one)")
    dataset: list[str] = field(default_factory=list, metadata={
        "help": "registered dataset to select (repeatable; default: the most recently registered)"})
    run_id: str | None = _flag("run id the Output dir proposes (default: a fresh one; created on Start)")
    share: bool = _flag("ask gradio for a public share link (off by default; prints a warning)", default=False)
    auth_user: str | None = _flag("login user for a non-loopback host (or env FINETUNE_WEBUI_USER)")
    auth_password_file: str | None = _flag("file holding the login password (or env FINETUNE_WEBUI_PASSWORD; "
                                           "generated and printed once if neither); never a flag value")
    timeout: float = _flag("seconds to wait for the UI to answer HTTP 200 (default 180)", default=180.0)
    status: bool = _flag("show the running Web UI of this layout (URL, PID, trainers) and exit", default=False)
    stop: bool = _flag("stop the running Web UI and every trainer it started, then exit", default=False)
    json: bool = _flag("with --status / --stop: print JSON", default=False)


OPTION_FIELDS = tuple(f.name for f in fields(WebUIOptions))
FLAG_HELP = {f.name: f.metadata["help"] for f in fields(WebUIOptions)}


def build_parser() -> argparse.ArgumentParser:
    """argparse for the module entry, generated from :class:`WebUIOptions` (no second copy)."""
    p = argparse.ArgumentParser(prog="python -m finetune.llama_factory.launcher",
                                description=__doc__.split("\n\n")[0])
    for f in fields(WebUIOptions):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"]
        if f.name == "dataset":
            p.add_argument(flag, action="append", default=[], help=help_text)
        elif f.default is False:
            p.add_argument(flag, action="store_true", help=help_text)
        elif f.name == "method":
            p.add_argument(flag, default=f.default, choices=sorted(METHOD_ALIASES), help=help_text)
        else:
            kind = {"port": int, "timeout": float}.get(f.name, str)
            p.add_argument(flag, type=kind, default=f.default, help=help_text)
    return p


def render_status(st: Mapping[str, Any]) -> str:
    if not st.get("running"):
        extra = " (removed a stale PID file)" if st.get("stale") else ""
        return f"no Web UI is running for this layout{extra}; start one: invoke webui"
    lines = [f"Web UI running at {st['url']} (PID {st['pid']}, since {st.get('started')})",
             f"  log  {st.get('log_path')}"]
    for t in st.get("trainers", []):
        lines.append(f"  trainer PID {t['pid']}: {t['cmd']}")
    lines.append("stop it: invoke webui --stop")
    return "\n".join(lines)


def _password_from_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as err:
        raise UserError(f"cannot read the password file: {err.strerror or err}", where=f"--auth-password-file {path}",
                        fix="write the password into a file only you can read (chmod 600), or set "
                            "FINETUNE_WEBUI_PASSWORD") from None
    if not text:
        raise UserError("the password file is empty", where=f"--auth-password-file {path}",
                        fix="write the password into it, or leave the flag out to get a generated one")
    return text


def run(layout: Layout, opts: WebUIOptions, out: Callable[[str], None] = print) -> int:
    """What `invoke webui` and the module entry do with their flags. Returns an exit code."""
    if opts.status:
        st = status(layout)
        out(json.dumps(st, ensure_ascii=False) if opts.json else render_status(st))
        return 0 if st["running"] else 1
    if opts.stop:
        res = stop(layout)
        if opts.json:
            out(json.dumps(res, ensure_ascii=False))
        elif res["stopped"]:
            out(f"stopped the Web UI at {res.get('url')} and {len(res['processes']) - 1} process(es) it started")
        else:
            out(f"{res['reason']}; nothing to stop")
        return 0
    return serve(layout, out=out, host=opts.host, port=int(opts.port), strict_port=opts.strict_port,
                 method=opts.method, model=opts.model, template=opts.template, run_id=opts.run_id,
                 share=opts.share, wait_timeout=float(opts.timeout), auth_user=opts.auth_user,
                 auth_password=_password_from_file(opts.auth_password_file),
                 datasets=list(opts.dataset or []) or None)


def main(argv: list[str] | None = None) -> int:
    from finetune.cli import guarded

    ns = build_parser().parse_args(argv)
    opts = WebUIOptions(**vars(ns))
    return guarded(lambda: run(Layout.from_env(), opts), as_json=opts.json)


if __name__ == "__main__":
    sys.exit(main())
