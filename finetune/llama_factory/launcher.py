"""Start LLaMA-Factory's Web UI (LlamaBoard) safely, pre-filled with our layout, and stop it cleanly.

    python finetune/llama_factory/launcher.py [--port 7860] [--model PATH --template qwen]
    invoke webui [...]            invoke webui --status            invoke webui --stop

* Safe by default: binds 127.0.0.1; another host needs gradio auth (user from ``--auth-user`` or
  ``FINETUNE_WEBUI_USER``; password from ``--auth-password`` / ``FINETUNE_WEBUI_PASSWORD`` or
  generated and printed once) and prints a warning. Share links off unless ``--share``; gradio
  analytics off.
* Port: the requested one, else the next free one (said plainly); ``--strict-port`` fails instead
  and names the process that holds it where the OS allows.
* Two ways to start (``--method``): ``cli`` runs LLaMA-Factory's own entry
  (``python -m llamafactory.cli webui``, i.e. ``llamafactory-cli webui``) with gradio's settings in
  the environment; ``env`` (default) runs ``python -m finetune.llama_factory.board``, a child Python
  that reads our settings from the environment and also pre-fills Data dir / Dataset on open.
  Both run in ``layout.state_dir`` so LlamaBoard's state folders sit at a fixed place.
* Readiness: waits for HTTP 200, then prints URL, PID, run id, log path and the next step. The UI's
  and its trainers' output go to ``<logs>/<run_id>/webui.log`` (UTF-8).
* Lifecycle: Ctrl-C / SIGTERM (CTRL_BREAK on Windows) stops the UI and every trainer it started;
  a PID file (``layout.pid_file``) serves ``--status`` and ``--stop``.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a script: make the kit importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from finetune.env.portable import path_with_scripts  # noqa: E402
from finetune.errors import UserError  # noqa: E402
from finetune.layout import Layout  # noqa: E402
from finetune.net import port_free, port_owner  # noqa: E402

KIT_ROOT = Path(__file__).resolve().parents[2]
METHODS = ("env", "cli")
METHOD_ALIASES = {"env": "env", "b": "env", "cli": "cli", "a": "cli", "llamafactory": "cli"}
SUPPORTED = ((0, 9, 3), (0, 10, 0))  # [min, max) LLaMA-Factory versions the launcher accepts
TESTED_VERSION = "0.9.5"
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
    import psutil

    try:
        proc = psutil.Process(int(info["pid"]))
        same = abs(proc.create_time() - float(info.get("create_time", proc.create_time()))) < 2.0
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False


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
    """Stop the UI named in the PID file and every process it started."""
    from finetune.proc import stop_tree

    st = status(layout)
    if not st["running"]:
        return {"stopped": False, "reason": "no Web UI is running for this layout", **st}
    pid = int(st["pid"])
    tree = [pid, *[c["pid"] for c in _tree(pid)]]
    killed = stop_tree(pid, timeout=timeout)
    layout.pid_file.unlink(missing_ok=True)
    return {"stopped": True, "pid": pid, "processes": tree, "killed": killed, "url": st.get("url")}


# ---- start / serve -----------------------------------------------------------------------------
@dataclass
class WebUIHandle:
    """A running Web UI started by :func:`start`."""

    url: str
    pid: int
    run_id: str
    log_path: Path
    host: str
    port: int
    method: str
    layout: Layout
    arg_set: str = ""
    output_dir: str = ""
    auth_user: str | None = None
    notes: list[str] = field(default_factory=list)
    process: Any = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def children(self) -> list[dict]:
        return _tree(self.pid)

    def stop(self, timeout: float = 15.0) -> list[int]:
        """Stop the UI and every trainer it started; returns the pids that were running."""
        from finetune.proc import stop_tree

        pids = [self.pid, *[c["pid"] for c in _tree(self.pid)]] if self.alive() else []
        stop_tree(self.pid, timeout=timeout)
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


def build_command(method: str) -> list[str]:
    if method == "cli":  # LLaMA-Factory's own entry, the Python equivalent of `llamafactory-cli webui`
        return [sys.executable, "-m", "llamafactory.cli", "webui"]
    return [sys.executable, "-m", "finetune.llama_factory.board"]


def build_env(layout: Layout, method: str, host: str, port: int, share: bool, template: str | None,
              auth: tuple[str, str, bool] | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: gradio's settings, ours, PATH with this Python's scripts folder
    (LlamaBoard starts trainers as ``llamafactory-cli train``), and no proxy for loopback."""
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
        })
        if template:
            env[board.ENV_TEMPLATE] = template
        if auth:
            env[board.ENV_AUTH_USER], env[board.ENV_AUTH_PASSWORD] = auth[0], auth[1]
    return env


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
                    raise UserError(f"the Web UI exited with code {rc} before it was ready", where=str(log_path),
                                    details=["last lines of its log:", *tail(log_path, 25).splitlines()],
                                    fix="read the log above; `invoke doctor` checks the installation")
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


def start(layout: Layout, host: str = "127.0.0.1", port: int = 7860, strict_port: bool = False,
          method: str = "env", model: str | Path | None = None, template: str | None = None,
          run_id: str | None = None, share: bool = False, wait_timeout: float = 180,
          auth_user: str | None = None, auth_password: str | None = None,
          board_args: Mapping[str, Any] | None = None, say: Say | None = _err,
          spinner: bool = True) -> WebUIHandle:
    """Start the Web UI in the background and return once it answers HTTP 200.

    ``board_args`` overrides values of the saved argument set (element id -> value), e.g.
    ``{"train.max_samples": "16"}``. ``say`` receives plain notes (moved port, generated password).
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
                     f"{board.ENV_AUTH_PASSWORD} to choose it)")
    if share:
        notes.append("WARNING: --share asks gradio for a public link; anyone with it reaches the UI")

    running = status(layout)
    if running["running"]:
        raise UserError(f"a Web UI for this layout is already running at {running.get('url')} "
                        f"(PID {running.get('pid')})", where=str(layout.pid_file),
                        fix="invoke webui --stop  (or open the URL above)")

    run_id = run_id or layout.new_run("webui")
    log_path = layout.log_dir(run_id) / LOG_NAME
    layout.ensure(layout.log_dir(run_id), layout.state_dir, layout.data_dir, layout.outputs_dir)
    files = board.prepare(layout, run_id, model=model, template=template, overrides=board_args)

    chosen, note = choose_port(host, port, strict_port)
    if note:
        notes.append(note)
    for msg in notes:
        say(msg)

    env = build_env(layout, method, host, chosen, share, template, auth)
    if method == "env" and files.values.get("train.compute_type") == "bf16" and not (board_args or {}).get(
            "train.compute_type") and not os.environ.get("FINETUNE_COMPUTE_TYPE"):
        env[board.ENV_REFINE_ARG_SET] = str(files.arg_set)  # a guess: the child checks the card
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write(f"[finetune] {time.strftime('%Y-%m-%d %H:%M:%S')} starting the Web UI ({method}) on "
                 f"{host}:{chosen}, run {run_id}\n")
    proc = popen_group(build_command(method), log_path=log_path, env=env, cwd=layout.state_dir)
    url = f"http://{_poll_host(host)}:{chosen}/"
    handle = WebUIHandle(url=url, pid=proc.pid, run_id=run_id, log_path=log_path, host=host, port=chosen,
                         method=method, layout=layout, arg_set=files.arg_set_name, output_dir=files.output_dir,
                         auth_user=auth[0] if auth else None, notes=notes, process=proc)
    try:
        import psutil

        create_time = psutil.Process(proc.pid).create_time()
    except Exception:  # noqa: BLE001 - died at once: _wait_ready reports it
        create_time = time.time()
    _write_json_atomic(layout.pid_file, {
        "pid": proc.pid, "create_time": create_time, "url": url, "host": host, "port": chosen,
        "run_id": run_id, "log_path": str(log_path), "method": method, "launcher_pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "arg_set": files.arg_set_name,
        "output_dir": files.output_dir,
    })
    try:
        _wait_ready(proc, url, log_path, wait_timeout, spinner)
    except BaseException:
        handle.stop(timeout=5)
        raise
    return handle


def ready_text(handle: WebUIHandle) -> str:
    lines = [
        f"LLaMA-Factory Web UI is ready: {handle.url}",
        f"  PID       {handle.pid}  (method {handle.method})",
        f"  run id    {handle.run_id}",
        f"  log       {handle.log_path}",
        f"  output    {handle.output_dir}",
    ]
    if handle.auth_user:
        lines.append(f"  login     user {handle.auth_user!r}")
    lines += [
        "next: open the URL; in the Train tab pick Config path "
        f"'{handle.arg_set}' and press 'Load arguments', then Start.",
        "      stop with Ctrl-C here (or `invoke webui --stop`); after training: `invoke runs`",
    ]
    return "\n".join(lines)


class _Stop(KeyboardInterrupt):
    """SIGTERM / CTRL_BREAK turned into the same path as Ctrl-C."""


def _raise_stop(signum, _frame):
    raise _Stop(signum)


def serve(layout: Layout, out: Callable[[str], None] = print, **kwargs: Any) -> int:
    """Start the UI, print where it is, and block until Ctrl-C / SIGTERM / CTRL_BREAK or until the UI
    exits. Stopping takes the UI and every trainer it started with it. Returns an exit code."""
    old = {}
    for name in ("SIGTERM", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                old[sig] = signal.signal(sig, _raise_stop)
            except (ValueError, OSError):  # not the main thread
                pass
    handle = None
    try:
        handle = start(layout, **kwargs)
        out(ready_text(handle))
        while True:
            rc = handle.process.poll()
            if rc is not None:
                from finetune.proc import tail

                if not layout.pid_file.exists():  # `invoke webui --stop` from elsewhere
                    out(f"the Web UI was stopped (invoke webui --stop); log: {handle.log_path}")
                    return 0
                handle.stop(timeout=5)
                _err(f"the Web UI exited with code {rc}; last lines of {handle.log_path}:\n"
                     f"{tail(handle.log_path, 20)}")
                return rc or 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        if handle is None:  # interrupted during start: start() already stopped what it began
            _err("interrupted before the Web UI was ready; it was stopped (nothing left running)")
            return 130
        pids = handle.stop()
        out(f"stopped the Web UI and {max(0, len(pids) - 1)} process(es) it started "
            f"(PIDs {', '.join(map(str, pids)) or '-'}); log: {handle.log_path}")
        return 0
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# ---- command line ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launcher.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; another "
                   "host needs --auth-user or FINETUNE_WEBUI_USER)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; the next free one if taken)")
    p.add_argument("--strict-port", action="store_true", help="fail if the port is taken instead of moving")
    p.add_argument("--method", default="env", choices=sorted(METHOD_ALIASES),
                   help="env (default): our child Python with settings in the environment (pre-fills Data "
                        "dir on open); cli: LLaMA-Factory's own `llamafactory-cli webui` entry")
    p.add_argument("--model", help="model folder to pre-fill (model name 'Custom', model path)")
    p.add_argument("--template", help="chat template to pre-fill (e.g. qwen)")
    p.add_argument("--run-id", help="run id for the Output dir and log folder (default: a new one)")
    p.add_argument("--share", action="store_true", help="ask gradio for a public share link (off by default)")
    p.add_argument("--auth-user", help="login user for a non-loopback host (or FINETUNE_WEBUI_USER)")
    p.add_argument("--auth-password", help="login password (or FINETUNE_WEBUI_PASSWORD; generated if unset)")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for the UI to answer (default 180)")
    p.add_argument("--status", action="store_true", help="show the running Web UI of this layout and exit")
    p.add_argument("--stop", action="store_true", help="stop the running Web UI (and its trainers) and exit")
    p.add_argument("--json", action="store_true", help="with --status / --stop: print JSON")
    return p


def render_status(st: Mapping[str, Any]) -> str:
    if not st.get("running"):
        extra = " (removed a stale PID file)" if st.get("stale") else ""
        return f"no Web UI is running for this layout{extra}; start one: invoke webui"
    lines = [f"Web UI running at {st['url']} (PID {st['pid']}, run {st.get('run_id')}, since {st.get('started')})",
             f"  log  {st.get('log_path')}"]
    for t in st.get("trainers", []):
        lines.append(f"  trainer PID {t['pid']}: {t['cmd']}")
    lines.append("stop it: invoke webui --stop")
    return "\n".join(lines)


def run_cli(layout: Layout, args: argparse.Namespace) -> int:
    """What `invoke webui` and the script do with parsed flags. Returns an exit code."""
    if args.status:
        st = status(layout)
        print(json.dumps(st, ensure_ascii=False) if args.json else render_status(st))
        return 0 if st["running"] else 1
    if args.stop:
        res = stop(layout)
        if args.json:
            print(json.dumps(res, ensure_ascii=False))
        elif res["stopped"]:
            print(f"stopped the Web UI at {res.get('url')} and {len(res['processes']) - 1} process(es) it started")
        else:
            print(f"{res['reason']}; nothing to stop")
        return 0
    return serve(layout, host=args.host, port=args.port, strict_port=args.strict_port, method=args.method,
                 model=args.model, template=args.template, run_id=args.run_id, share=args.share,
                 wait_timeout=args.timeout, auth_user=args.auth_user, auth_password=args.auth_password)


def main(argv: list[str] | None = None) -> int:
    from finetune.cli import guarded

    args = build_parser().parse_args(argv)
    return guarded(lambda: run_cli(Layout.from_env(), args), as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
