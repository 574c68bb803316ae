"""Isolated environments per tier: ``nox`` (fast unit tests), ``nox -s smoke`` (real LLaMA-Factory
on the CPU), ``demo``, ``e2e`` (Chromium), ``cuda`` (GPU), ``lint``.

The torch / torchvision / torchaudio set is chosen per platform (finetune/env/platforms.py);
override with FINETUNE_TORCH_FLAVOUR / FINETUNE_TORCH_INDEX_URL or the posargs
``--torch-flavour=NAME`` / ``--torch-index=URL``. A built venv is reused: a stamp records what was
installed, so a second run installs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))
from finetune.env import platforms  # noqa: E402  (light: no torch)

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = False

LIGHT = ["-e", ".[test]"]


def _split_posargs(session: nox.Session) -> tuple[dict[str, str], list[str]]:
    """``--torch-flavour=`` / ``--torch-index=`` are ours; everything else goes to pytest."""
    ours, rest = {}, []
    for arg in session.posargs:
        key, _, value = arg.partition("=")
        if key in ("--torch-flavour", "--torch-index") and value:
            ours[key[2:]] = value
        else:
            rest.append(arg)
    return ours, rest


def full_stack(session: nox.Session, extras: str = "train,test", flavour: str | None = None) -> list[str]:
    """Install the training stack once (verified torch set + llamafactory); return pytest posargs."""
    ours, rest = _split_posargs(session)
    ts = platforms.torch_set(ours.get("torch-flavour") or flavour)
    index = ours.get("torch-index") or os.environ.get(platforms.TORCH_INDEX_ENV) or ts.index_url
    recipe = json.dumps([ts.requirements(), index, extras, (ROOT / "pyproject.toml").read_text("utf-8")])
    stamp = Path(session.virtualenv.location) / ".finetune-stack"
    digest = hashlib.sha256(recipe.encode()).hexdigest()
    if stamp.is_file() and stamp.read_text("utf-8") == digest:
        session.log(f"reusing the '{ts.flavour}' stack in {session.virtualenv.location} (nothing to install)")
    else:
        stamp.unlink(missing_ok=True)
        session.log(f"installing the '{ts.flavour}' torch set: {' '.join(ts.requirements())}")
        session.install(*ts.pip_args(index))
        session.install("-e", f".[{extras}]", *ts.requirements())
        if session.run("python", "-m", "finetune.env.verify_stack", success_codes=[0, 1]) != 0:
            session.log("the torch set does not load together: reinstalling the verified set once")
            session.install("--force-reinstall", "--no-deps", *ts.pip_args(index))
            session.run("python", "-m", "finetune.env.verify_stack")  # fails the session with the fix
        stamp.write_text(digest, encoding="utf-8")
    return rest


@nox.session
def tests(session: nox.Session) -> None:
    """Fast unit tests in a light venv (no torch)."""
    session.install(*LIGHT)
    session.run("pytest", "tests/unit", "-m", "not smoke and not e2e and not gpu", *session.posargs)


@nox.session(default=False)
def smoke(session: nox.Session) -> None:
    """Full CPU stack, the demo end to end, then the smoke suite (real LLaMA-Factory training)."""
    rest = full_stack(session)
    session.run("invoke", "demo")
    session.run("pytest", "tests/smoke", "-m", "smoke", *rest)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """Full stack, then `invoke demo` end to end."""
    full_stack(session)
    session.run("invoke", "demo")


@nox.session(default=False)
def e2e(session: nox.Session) -> None:
    """Browser tests: Debian's Chromium drives the Web UI through training."""
    rest = full_stack(session, extras="train,test,browser")
    session.run("pytest", "tests/e2e", "-m", "e2e", *rest)


@nox.session(default=False)
def cuda(session: nox.Session) -> None:
    """CUDA stack and the GPU tests; skipped cleanly without a GPU."""
    if not shutil.which("nvidia-smi"):
        session.skip("no NVIDIA GPU here (nvidia-smi not found): nothing to test on CUDA")
    rest = full_stack(session, flavour=os.environ.get(platforms.FLAVOUR_ENV) or "linux-cuda")
    session.run("pytest", "tests/gpu", "-m", "gpu", *rest)


@nox.session(default=False)
def lint(session: nox.Session) -> None:
    """Ruff over the package, tasks, tools and tests."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "finetune", "tasks.py", "noxfile.py", "run_finetune.py", "tools", "tests",
                "benchmarks", "process_data")
