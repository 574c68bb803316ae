"""What differs between Windows, macOS and Linux, in one place (docs/field-notes.md#windows):
where console scripts live, which process-group backend the ranks use, and which paths
LLaMA-Factory's torchrun launch cannot carry. Light: no torch import.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from pathlib import Path


def scripts_dirs() -> list[Path]:
    """Where this Python's console scripts live, best first: the environment's scripts folder
    (``<venv>/bin``, ``<venv>\\Scripts``, ``<prefix>\\Scripts`` for python.org and conda), the user scheme's,
    then the folder of ``sys.executable`` (right for venvs only)."""
    out: list[Path] = []
    schemes = [None, f"{os.name}_user" if os.name == "nt" else "posix_user"]
    for scheme in schemes:
        try:
            path = sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts")
        except KeyError:
            continue
        if path:
            out.append(Path(path))
    out.append(Path(sys.executable).parent)
    seen: list[Path] = []
    for p in out:
        if p not in seen:
            seen.append(p)
    return seen


def script_path(name: str, dirs: Iterable[Path] | None = None) -> Path | None:
    """A console script of this environment (``torchrun``, ``llamafactory-cli``; ``.exe`` on Windows),
    else the one on PATH, else None."""
    for folder in dirs if dirs is not None else scripts_dirs():
        found = shutil.which(name, path=str(folder))
        if found:
            return Path(found)
    found = shutil.which(name)
    return Path(found) if found else None


def path_with_scripts(path: str | None = None) -> str:
    """``PATH`` with this environment's scripts folder first: LLaMA-Factory and LlamaBoard start
    ``torchrun`` / ``llamafactory-cli`` by name, and an unactivated venv is not on PATH."""
    rest = path if path is not None else os.environ.get("PATH", "")
    return os.pathsep.join([str(scripts_dirs()[0]), *([rest] if rest else [])])


def ddp_backend(cuda: bool, system: str | None = None) -> str | None:
    """The ``ddp_backend`` the ranks need, or None for torch's default: gloo without CUDA, and on Windows
    always (PyTorch has no NCCL there)."""
    if (system or platform.system()) == "Windows" or not cuda:
        return "gloo"
    return None


def torchrun_launch(env: Mapping[str, str], gpu_count: int | None = None) -> bool:
    """Whether LLaMA-Factory will start torchrun: ``FORCE_TORCHRUN`` set, or more than one visible GPU."""
    if env.get("FORCE_TORCHRUN", "").lower() in ("1", "true", "y", "yes"):
        return True
    return (gpu_count if gpu_count is not None else _visible_gpus(env)) > 1


def _visible_gpus(env: Mapping[str, str]) -> int:
    visible = env.get("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    import subprocess

    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def torchrun_path_problems(paths: Iterable[str | Path], package_dir: Path | None = None) -> list[str]:
    """Paths that LLaMA-Factory's torchrun launch would split on whitespace (it joins the arguments and
    the path of its own launcher into one string and splits it again; docs/field-notes.md#torchrun-command)."""
    if package_dir is None:
        import importlib.util

        spec = importlib.util.find_spec("llamafactory")
        package_dir = Path(spec.origin).parent if spec and spec.origin else None
    checked = [str(p) for p in paths] + ([str(package_dir)] if package_dir else [])
    return [p for p in checked if any(ch.isspace() for ch in p)]


def check_torchrun_paths(env: Mapping[str, str], paths: Iterable[str | Path], gpu_count: int | None = None,
                         package_dir: Path | None = None, system: str | None = None) -> None:
    """Refuse up front, with the fix, a multi-process run whose paths contain spaces."""
    if not torchrun_launch({**os.environ, **env}, gpu_count):
        return
    bad = torchrun_path_problems(paths, package_dir)
    if not bad:
        return
    from finetune.env.platforms import env_command
    from finetune.errors import UserError

    windows = (system or platform.system()) == "Windows"
    folder = "C:\\finetune\\outputs" if windows else "/srv/finetune/outputs"
    venv_fix = ("create the venv in a folder without spaces (e.g. " + ("C:\\venvs\\ft" if windows else "/opt/ft")
                + ") and install there; ") if package_dir and str(package_dir) in bad else ""
    raise UserError("LLaMA-Factory's torchrun launch splits paths at spaces, so these would break it: "
                    + ", ".join(bad), where="invoke train",
                    fix=venv_fix + "put runs in a folder without spaces: "
                    + env_command("FINETUNE_OUTPUTS_DIR", folder, "invoke train ...", system=system)
                    + " (or train with one process: drop --nproc-per-node / --nnodes)")
