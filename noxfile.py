"""Isolated environments per tier: ``nox`` (fast unit tests in a light venv), ``nox -s smoke`` (real
LLaMA-Factory on the CPU), ``demo``, ``e2e`` (Chromium), ``cuda`` (GPU), ``lint``.

smoke, demo, e2e and cuda share ONE full-stack venv per torch flavour, ``.nox/stack-<flavour>``,
built by :func:`stack` the first time any of them runs (time and size printed) and reused after:
a stamp records what was installed, so a second run installs nothing. The torch / torchvision /
torchaudio set is chosen per platform (finetune/env/platforms.py); override with
FINETUNE_TORCH_FLAVOUR / FINETUNE_TORCH_INDEX_URL or the posargs ``--torch-flavour=NAME`` /
``--torch-index=URL``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))
from finetune.env import platforms  # noqa: E402  (light: no torch)

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = False

STACK_EXTRAS = "train,test,browser"


def stack(session: nox.Session, flavour: str | None = None) -> tuple[str, list[str]]:
    """Build (once) or reuse the shared full-stack venv; return its python and the pytest posargs."""
    ours = {a.split("=", 1)[0][2:]: a.split("=", 1)[1] for a in session.posargs
            if a.startswith(("--torch-flavour=", "--torch-index="))}
    rest = [a for a in session.posargs if not a.startswith(("--torch-flavour=", "--torch-index="))]
    flavour = ours.get("torch-flavour") or flavour
    if not flavour and (why := platforms.unsupported_reason()):
        session.error(why)  # one message, no pip traceback
    ts = platforms.torch_set(flavour)
    index = ours.get("torch-index") or os.environ.get(platforms.TORCH_INDEX_ENV) or ts.index_url
    venv = ROOT / ".nox" / f"stack-{ts.flavour}"
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = str(bindir / ("python.exe" if os.name == "nt" else "python"))
    recipe = json.dumps([ts.requirements(), index, STACK_EXTRAS, (ROOT / "pyproject.toml").read_text("utf-8")])
    stamp, digest = venv / ".finetune-stack", hashlib.sha256(recipe.encode()).hexdigest()
    session.env.update({"VIRTUAL_ENV": str(venv), "PATH": os.pathsep.join([str(bindir), os.environ["PATH"]])})
    if stamp.is_file() and stamp.read_text("utf-8") == digest:
        session.log(f"reusing the '{ts.flavour}' stack in {venv} (nothing to install)")
        return python, rest
    t0 = time.monotonic()
    fresh = not Path(python).is_file()
    if fresh:
        session.run(sys.executable, "-m", "venv", str(venv), external=True)
    pip = [python, "-m", "pip", "install", "-q"]
    session.log(f"{'installing' if fresh else 'updating (the recipe changed)'} the '{ts.flavour}' stack: "
                + " ".join(ts.requirements()))
    session.run(*pip, *ts.pip_args(index), external=True)
    session.run(*pip, "-e", f".[{STACK_EXTRAS}]", *ts.requirements(), external=True)
    # session.run returns True (or the output), never the exit code: ask the child (docs/field-notes.md#nox)
    if subprocess.run([python, "-m", "finetune.env.verify_stack"], cwd=ROOT).returncode != 0:
        session.log("the torch set does not load together: reinstalling the verified set once")
        session.run(*pip, "--force-reinstall", "--no-deps", *ts.pip_args(index), external=True)
        session.run(python, "-m", "finetune.env.verify_stack", external=True)  # fails with the fix
    stamp.write_text(digest, encoding="utf-8")
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    session.log(f"stack '{ts.flavour}' built in {time.monotonic() - t0:.0f} s, {size / 2**30:.2f} GiB at {venv}")
    return python, rest


@nox.session
def tests(session: nox.Session) -> None:
    """Fast unit tests in a light venv (no torch)."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/unit", "-m", "not smoke and not e2e and not gpu", *session.posargs)


@nox.session(default=False, venv_backend="none")
def smoke(session: nox.Session) -> None:
    """The demo end to end, then the smoke suite (real LLaMA-Factory training), in the shared stack."""
    python, rest = stack(session)
    session.run(python, "-m", "invoke", "demo", external=True)
    session.run(python, "-m", "pytest", "tests/smoke", "-m", "smoke", *rest, external=True)


@nox.session(default=False, venv_backend="none")
def demo(session: nox.Session) -> None:
    """`invoke demo` end to end in the shared stack."""
    python, _ = stack(session)
    session.run(python, "-m", "invoke", "demo", external=True)


@nox.session(default=False, venv_backend="none")
def e2e(session: nox.Session) -> None:
    """Browser tests: Chromium drives the Web UI through training, in the shared stack."""
    python, rest = stack(session)
    session.run(python, "-m", "pytest", "tests/e2e", "-m", "e2e", *rest, external=True)


@nox.session(default=False, venv_backend="none")
def cuda(session: nox.Session) -> None:
    """The GPU tests in the CUDA stack; skipped cleanly without a GPU."""
    if not shutil.which("nvidia-smi"):
        session.skip("no NVIDIA GPU here (nvidia-smi not found): nothing to test on CUDA")
    python, rest = stack(session, flavour=None if sys.platform != "linux" else os.environ.get(platforms.FLAVOUR_ENV) or "linux-cuda")
    session.run(python, "-m", "pytest", "tests/gpu", "-m", "gpu", *rest, external=True)


@nox.session(default=False)
def lint(session: nox.Session) -> None:
    """Ruff over the package, tasks, tools and tests."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "finetune", "tasks.py", "noxfile.py", "run_finetune.py", "tools", "tests",
                "benchmarks", "process_data")
