"""The core's dependencies are complete: a FRESH venv with `pip install .` alone (no extras, no test
tools beside it) runs every light task. pytest brings `packaging` and more along, so only a venv of
its own can prove it. pip's cache is reused; the venv is built for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("core") / "venv"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / ("python.exe" if os.name == "nt" else "python")
    # what `pip install .` builds from a clone, copied so no build/ is left in the working tree
    src = venv.parent / "src"
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name if src.is_dir() else (src.mkdir() or src / name))
    shutil.copytree(ROOT / "finetune", src / "finetune",
                    ignore=shutil.ignore_patterns("__pycache__", "outputs", "logs", "state", "cache"))
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True,
                          timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"core venv: {time.monotonic() - t0:.0f} s")
    return bindir


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PYTHONIOENCODING": "utf-8", **extra}


def _invoke(bindir: Path, *args: str, root: Path) -> subprocess.CompletedProcess:
    exe = bindir / ("invoke.exe" if os.name == "nt" else "invoke")
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, encoding="utf-8",
                          timeout=120, env=_env(FINETUNE_ROOT=str(root)))


def _no_import_error(proc: subprocess.CompletedProcess) -> None:
    for bad in ("ModuleNotFoundError", "ImportError", "Traceback"):
        assert bad not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
def test_core_alone_has_no_heavy_or_test_packages(core_venv):
    code = ("import importlib.util as u; print([m for m in ('torch', 'pytest', 'llamafactory', 'transformers') "
            "if u.find_spec(m)])")
    py = core_venv / ("python.exe" if os.name == "nt" else "python")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60, env=_env(), cwd="/")
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.slow
def test_light_tasks_run_with_the_core_alone(core_venv, tmp_path):
    doctor = _invoke(core_venv, "doctor", "--fast", "--json", root=tmp_path)
    _no_import_error(doctor)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert checks["llamafactory"]["status"] == "fail"  # truthfully: the core has no training stack
    assert doctor.returncode == 1

    data = tmp_path / "ok.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n", encoding="utf-8")
    check = _invoke(core_venv, "data.check", str(data), "--json", root=tmp_path)
    _no_import_error(check)
    assert check.returncode == 0 and json.loads(check.stdout)["files"][0]["valid"] == 1

    runs = _invoke(core_venv, "runs", "--json", root=tmp_path)
    _no_import_error(runs)
    assert runs.returncode == 0 and isinstance(json.loads(runs.stdout), (list, dict))
