"""Run the bash blocks of a Markdown file in order, the way a reader follows it.

The blocks come from pytest-codeblocks' parser (``pytest_codeblocks.extract_from_file``), which also
reads the visible marks in the Markdown:

    <!--pytest.mark.skip(reason="needs an NVIDIA GPU")-->      the block cannot run here; says why
    <!-- guide-test: 8.1 -->                                   the block is a troubleshooting fix: the
                                                                test for that case causes the failure
                                                                and then runs this block

Everything else runs, block after block, in one throwaway copy of the working tree (so a later block
sees what an earlier one made, as a reader's checkout does), with ``bash -e``: every command must exit 0.
What the runner changes, and the guide says so at its top (section "照着做"):

- placeholders are replaced (``/path/to/model`` and friends -> the tiny model the guide's first block
  makes, ``RUN_ID`` -> the newest finished run, ``checkpoint-100`` -> that run's checkpoint);
- a command that starts a server in the foreground (``invoke webui``, ``llamafactory-cli webui``) is
  started in the background and waited for until it says it is ready, as a reader would then type
  the next command in a second terminal; at the end of the block the runner stops it
  (``invoke webui --stop``, then the process group), as a reader presses Ctrl-C;
- standard input is empty (an interactive chat ends at once).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide" / "finetune-llama-factory.md"
README = ROOT / "README.md"

TINY = "finetune/cache/models/tiny-qwen2"

# The full-stack venv as the guide names it (noxfile.py: stack()); the runner uses its own.
VENV_NAMES = (".nox/stack-linux-cuda", ".nox/smoke")

# Placeholders a reader replaces with their own paths; the runner uses the guide's own tiny model.
MODEL_PLACEHOLDERS = (
    "/path/to/Qwen2.5-1.5B-Instruct", "/models/Qwen2.5-1.5B-Instruct", "/path/to/full-precision-base",
    "/new/path/to/base", "/path/to/model",
)

GUIDE_TEST_RE = re.compile(r"<!--\s*guide-test:\s*([0-9.]+)\s*-->")
SKIP_RE = re.compile(r"""pytest\.mark\.skip\(\s*reason\s*=\s*(["'])(.+?)\1\s*\)""")
SERVER_RE = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:invoke\s+webui\b(?!.*--(?:status|stop|help)\b)"
                       r"|llamafactory-cli\s+webui\b)")
READY_RE = r"is ready: http|Running on local URL"


@dataclass
class Block:
    file: Path
    lineno: int
    code: str
    skip_reason: str | None = None
    guide_test: str | None = None

    @property
    def where(self) -> str:
        return f"{self.file.name}:{self.lineno}"


@dataclass
class Outcome:
    block: Block
    ok: bool
    seconds: float
    output: str = ""


@dataclass
class FileReport:
    file: Path
    outcomes: list[Outcome] = field(default_factory=list)
    marked: list[Block] = field(default_factory=list)
    by_tests: list[Block] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for b in self.marked:
            reasons[b.skip_reason or "?"] = reasons.get(b.skip_reason or "?", 0) + 1
        why = "; ".join(f"{n}x {r}" for r, n in reasons.items())
        secs = sum(o.seconds for o in self.outcomes)
        return (f"{self.file.name}: {len(self.outcomes)} blocks ran in order ({len(self.failed)} failed, "
                f"{secs:.0f} s), {len(self.by_tests)} ran by the troubleshooting tests, "
                f"{len(self.marked)} marked" + (f" ({why})" if why else ""))


def blocks(path: Path) -> list[Block]:
    """The file's bash / sh blocks with their marks (pytest-codeblocks' parser)."""
    from pytest_codeblocks import extract_from_file

    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for cb in extract_from_file(path):
        if cb.syntax not in ("bash", "sh"):
            continue
        block = Block(path, cb.lineno, cb.code)
        for mark in cb.marks:
            m = SKIP_RE.search(mark)
            block.skip_reason = m.group(2) if m else f"unexplained mark {mark!r}"
        # the nearest non-blank line above the fence may name the troubleshooting test that runs it
        i = cb.lineno - 2
        while i >= 0 and not lines[i].strip():
            i -= 1
        m = GUIDE_TEST_RE.search(lines[i]) if i >= 0 else None
        if m:
            block.guide_test = m.group(1)
        out.append(block)
    return out


# ---- the throwaway checkout ----------------------------------------------------------------------
def make_tree(dest: Path) -> Path:
    """A copy of the working tree as git sees it (tracked + untracked, not ignored): a fresh clone
    with the uncommitted edits (the venv the guide activates is substituted, see :func:`substitute`)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.decode("utf-8").split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def clean_env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FINETUNE_", "PYTEST_", "GRADIO_SERVER", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(DISABLE_VERSION_CHECK="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONUTF8="1", NO_COLOR="1", COLUMNS="200", TERM="dumb")
    env["HOME"] = str(tree.parent / "home")
    Path(env["HOME"]).mkdir(exist_ok=True)
    return env


# ---- placeholders --------------------------------------------------------------------------------
def substitute(code: str, tree: Path) -> str:
    """Placeholders -> this tree's paths. ``RUN_ID`` and ``checkpoint-100`` are resolved by bash when
    the line runs (the newest finished run at that moment, as a reader would read it off ``invoke runs``)."""
    for ph in MODEL_PLACEHOLDERS:
        code = code.replace(ph, str(tree / TINY))
    code = code.replace("/path/to/finetune-kit", str(tree))
    for venv in VENV_NAMES:  # the venv the guide activates is the one running these tests
        code = code.replace(venv, str(Path(sys.prefix)))
    code = re.sub(r"\bRUN_ID\b", "$(__run_id)", code)
    return code.replace("checkpoint-100", "$(__checkpoint)")


# ---- one block -----------------------------------------------------------------------------------
PRELUDE = r"""
set -e -o pipefail
set -m
__root=$PWD
__pids=()
__ready() {  # PID LOG: wait until the server says it is ready, or fail with its exit code
  local pid=$1 log=$2 i
  for ((i = 0; i < 2400; i++)); do
    if grep -qE '__READY__' "$log"; then cat "$log"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$log"; wait "$pid"; return $?; fi
    sleep 0.1
  done
  cat "$log"; echo "guide runner: the server was not ready after 240 s" >&2; return 1
}
__run_id() {  # the newest run that finished training
  local f
  f=$(ls -1d "$__root"/finetune/outputs/llamafactory/*/train_results.json 2>/dev/null | sort | tail -n 1)
  [ -n "$f" ] || { echo "guide runner: no finished run for RUN_ID" >&2; return 1; }
  basename "$(dirname "$f")"
}
__checkpoint() {  # that run's latest checkpoint-N
  ls -1d "$__root/finetune/outputs/llamafactory/$(__run_id)"/checkpoint-* | sort -t- -k2 -n | tail -n 1 | xargs basename
}
__cleanup() {
  local rc=$?
  set +e
  cd "$__root"
  if [ ${#__pids[@]} -gt 0 ]; then
    invoke webui --stop >/dev/null 2>&1
    for p in "${__pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
    for p in "${__pids[@]}"; do wait "$p" 2>/dev/null; done
  fi
  exit $rc
}
trap __cleanup EXIT
""".replace("__READY__", READY_RE)


def script_for(code: str, extra: str = "") -> str:
    """The block as a bash script: servers go to the background and are waited for. ``extra`` (a
    test's own checks, not the guide's) runs after the block while its servers are still up."""
    lines, n = [PRELUDE], 0
    joined = code.replace("\\\n", " ")
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        lines.append(f"echo '$ '{shlex_quote(line)}")
        if SERVER_RE.match(line):
            n += 1
            log = f"$__root/.guide-server-{n}.log"
            lines.append(f"{{ {line}\n}} >\"{log}\" 2>&1 </dev/null &")
            lines.append("__pids+=($!)")
            lines.append(f"__ready $! \"{log}\"")
        else:
            lines.append(line)
    if extra:
        lines += ["echo '--- test checks (not part of the guide) ---'", extra]
    return "\n".join(lines) + "\n"


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def kill_session(sid: int) -> None:
    """End every process of a block's session (bash runs each command in its own process group)."""
    import signal

    import psutil

    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                os.kill(proc.pid, signal.SIGKILL)
        except (OSError, psutil.Error):
            pass


def run_block(block: Block, tree: Path, env: dict[str, str], timeout: float = 1500, extra: str = "") -> Outcome:
    code = substitute(block.code, tree)
    start = time.perf_counter()
    proc = subprocess.Popen(["bash", "-c", script_for(code, extra)], cwd=tree, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        raw, _ = proc.communicate(timeout=timeout)
        out = raw.decode("utf-8", "replace")
        ok = proc.returncode == 0
        if not ok:
            out += f"\n[exit code {proc.returncode}]"
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        raw, _ = proc.communicate()
        out = raw.decode("utf-8", "replace") + f"\n[timed out after {timeout:.0f} s]"
        ok = False
    return Outcome(block, ok, time.perf_counter() - start, out)


def run_file(path: Path, tree: Path, env: dict[str, str], log=print) -> FileReport:
    report = FileReport(path)
    for block in blocks(path):
        if block.skip_reason:
            report.marked.append(block)
            log(f"  {block.where:<34} marked: {block.skip_reason}")
            continue
        if block.guide_test:
            report.by_tests.append(block)
            log(f"  {block.where:<34} run by the troubleshooting test for {block.guide_test}")
            continue
        outcome = run_block(block, tree, env)
        report.outcomes.append(outcome)
        log(f"  {block.where:<34} {'ok    ' if outcome.ok else 'FAILED'} {outcome.seconds:6.1f} s")
        if not outcome.ok:
            log("    " + "\n    ".join(outcome.output.strip().splitlines()[-25:]))
    return report


def run_commands(code: str, tree: Path, env: dict[str, str], timeout: float = 1500, extra: str = "") -> Outcome:
    """Commands that are not a guide block (a test's own), run the same way."""
    return run_block(Block(Path("test"), 0, code), tree, env, timeout=timeout, extra=extra)


# ---- one throwaway tree per test process, shared by the guide run and the troubleshooting tests ----
_SHARED: dict[str, Path] = {}


def shared_tree() -> Path:
    """The throwaway checkout (made once per process, removed at exit)."""
    if "tree" not in _SHARED:
        import atexit
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="finetune-guide-"))
        atexit.register(shutil.rmtree, base, True)
        _SHARED["tree"] = make_tree(base / "finetune-kit")
    return _SHARED["tree"]


def ensure_basics(tree: Path, env: dict[str, str]) -> None:
    """What the guide's first blocks make, when they have not run in this tree yet (a test run alone):
    the tiny model, the sample files, the dataset ``chats`` converted and registered."""
    steps = []
    if not (tree / TINY / "config.json").is_file():
        steps.append("python tools/make_tiny_model.py")
    if not (tree / "raw" / "mine.jsonl").is_file():
        steps.append("python tools/make_guide_samples.py")
    if '"chats"' not in (tree / "dataset" / "llamafactory" / "dataset_info.json").read_text(encoding="utf-8"):
        steps += ["invoke data.convert raw/chats.json --name chats", "invoke data.register dataset/llamafactory/chats.jsonl"]
    if steps:
        out = run_commands("\n".join(steps), tree, env)
        assert out.ok, out.output


def ensure_finished_run(tree: Path, env: dict[str, str]) -> str:
    """The newest finished run (trains a one-epoch run on ``chats`` when there is none)."""
    done = sorted(p.parent.name for p in (tree / "finetune" / "outputs" / "llamafactory").glob("*/train_results.json"))
    if done:
        return done[-1]
    out = run_commands(f"invoke train --model {TINY} --template qwen --dataset chats --epochs 1", tree, env)
    assert out.ok, out.output
    return ensure_finished_run(tree, env)
