"""Which torch / torchvision / torchaudio set to install where: one source for nox and doctor.

LLaMA-Factory imports torchaudio at module level (``llamafactory.data.mm_plugin``), so the three
wheels must load together. The sets below were verified (docs/field-notes.md#torch-sets): on Linux x86_64
``torch 2.14.1 + torchvision 0.29.1 + torchaudio 2.11.0`` from the default index imports and
trains on the CPU; the newest CPU-only ``torch`` alone does not load the index's torchvision.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass

LLAMAFACTORY_VERSION = "0.9.5"
TORCH_INDEX_ENV = "FINETUNE_TORCH_INDEX_URL"
FLAVOUR_ENV = "FINETUNE_TORCH_FLAVOUR"

# What LLaMA-Factory 0.9.5 pins (from its setup; re-check when upgrading).
LLAMAFACTORY_PINS = {
    "transformers": (">=4.55", "<=5.6.0"),
    "peft": (">=0.18.0", "<=0.18.1"),
    "gradio": (">=4.38", "<=5.50.0"),
    "datasets": (None, "<=4.0.0"),
    "trl": (None, "<=0.24.0"),
    "accelerate": (None, "<=1.11.0"),
}


@dataclass(frozen=True)
class TorchSet:
    flavour: str
    torch: str
    torchvision: str
    torchaudio: str
    index_url: str | None = None
    note: str = ""

    def requirements(self) -> list[str]:
        return [f"torch=={self.torch}", f"torchvision=={self.torchvision}", f"torchaudio=={self.torchaudio}"]

    def pip_args(self, index_url: str | None = None) -> list[str]:
        url = index_url or self.index_url
        return [*self.requirements(), *(["--index-url", url] if url else [])]


TORCH_SETS: dict[str, TorchSet] = {
    # Default on Linux: works on CUDA machines and on the CPU (the wheel carries CUDA, runs without).
    "linux-cuda": TorchSet("linux-cuda", "2.14.1", "0.29.1", "2.11.0",
                           note="CUDA build from the default index; also runs on the CPU"),
    # A real Linux box without a GPU: PyTorch's CPU index saves ~4 GB. Needs that index reachable.
    "linux-cpu": TorchSet("linux-cpu", "2.9.1", "0.24.1", "2.9.1",
                          index_url="https://download.pytorch.org/whl/cpu",
                          note="CPU-only wheels from PyTorch's CPU index"),
    "linux-aarch64": TorchSet("linux-aarch64", "2.9.1", "0.24.1", "2.9.1", note="CPU build"),
    "macos": TorchSet("macos", "2.9.1", "0.24.1", "2.9.1", note="MPS on Apple silicon, else CPU"),
    "windows": TorchSet("windows", "2.9.1", "0.24.1", "2.9.1",
                        note="CPU from the default index; for CUDA set "
                             f"{TORCH_INDEX_ENV}=https://download.pytorch.org/whl/cu126"),
}


# (system, machine) -> flavour. Anything else has no verified set (docs/field-notes.md#torch-sets).
SUPPORTED = {
    ("Linux", "x86_64"): "linux-cuda", ("Linux", "aarch64"): "linux-aarch64",
    ("Darwin", "arm64"): "macos", ("Windows", "x86_64"): "windows",
}
_ARCH = {"amd64": "x86_64", "x64": "x86_64", "arm64": "arm64", "aarch64": "aarch64"}
UNSUPPORTED = {
    ("Darwin", "x86_64"): "Intel macOS: PyTorch's last wheels for it are torch 2.2.2, older than the "
                          "torch >= 2.4 LLaMA-Factory 0.9.5 needs (on an Apple-silicon Mac this means an "
                          "x86_64 Python under Rosetta: install an arm64 Python instead)",
    ("Windows", "arm64"): "Windows on ARM64: PyTorch publishes no Windows ARM64 wheels on its default index",
}
WHAT_WORKS = ("What works instead: the light tasks run here (python -m pip install . then invoke doctor "
              "--fast, invoke data.convert / data.check / data.register, invoke runs); train on Linux "
              "x86_64 or aarch64, an Apple-silicon Mac, Windows x64 or WSL2, e.g. a cloud GPU box")


PLATFORM_ENV = "FINETUNE_PLATFORM"  # "System/machine", e.g. Darwin/x86_64: ask what the kit says there


def _platform(system: str | None, machine: str | None) -> tuple[str, str]:
    if system is None and machine is None and "/" in os.environ.get(PLATFORM_ENV, ""):
        system, machine = os.environ[PLATFORM_ENV].split("/", 1)
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    arch = _ARCH.get(machine, machine)
    if system == "Linux" and arch == "arm64":
        arch = "aarch64"
    if system in ("Darwin", "Windows") and arch == "aarch64":
        arch = "arm64"
    return system, arch


def unsupported_reason(system: str | None = None, machine: str | None = None,
                       env: dict[str, str] | None = None) -> str | None:
    """Why this platform has no training stack (one message, naming what works instead), or None."""
    env = dict(os.environ) if env is None else env
    if env.get(FLAVOUR_ENV):  # the user chose a set on purpose
        return None
    key = _platform(system, machine)
    if key in SUPPORTED:
        return None
    why = UNSUPPORTED.get(key, f"{key[0]} on {key[1]}: no verified torch / torchvision / torchaudio set "
                               "for this platform")
    return f"no training stack for {why}. {WHAT_WORKS}."


def detect_flavour(system: str | None = None, machine: str | None = None,
                   env: dict[str, str] | None = None) -> str:
    """The torch flavour for this platform (``FINETUNE_TORCH_FLAVOUR`` overrides); "unsupported" if none."""
    env = dict(os.environ) if env is None else env
    if env.get(FLAVOUR_ENV):
        return env[FLAVOUR_ENV]
    return SUPPORTED.get(_platform(system, machine), "unsupported")


def torch_set(flavour: str | None = None) -> TorchSet:
    """The verified set; a :class:`UserError` on a platform without one, KeyError for an unknown name."""
    flavour = flavour or detect_flavour()
    if flavour == "unsupported":
        from finetune.errors import UserError

        raise UserError(unsupported_reason() or "no training stack for this platform", where="platform",
                        fix="set FINETUNE_TORCH_FLAVOUR to one of " + ", ".join(sorted(TORCH_SETS))
                            + " only if you know its wheels install here")
    if flavour not in TORCH_SETS:
        known = ", ".join(sorted(TORCH_SETS))
        raise KeyError(f"unknown torch flavour {flavour!r}; known: {known}")
    return TORCH_SETS[flavour]


def install_steps(flavour: str | None = None) -> list[str]:
    """The commands that install a working training stack here, one per step (valid in bash, cmd and
    PowerShell: plain ``python`` is the active venv's, no ``&&``; docs/field-notes.md#windows)."""
    ts = torch_set(flavour)
    index = os.environ.get(TORCH_INDEX_ENV) or ts.index_url
    torch_cmd = "python -m pip install " + " ".join(ts.requirements()) + (f" --index-url {index}" if index else "")
    return [torch_cmd, 'python -m pip install -e ".[train]" ' + " ".join(ts.requirements())]


def install_command(flavour: str | None = None) -> str:
    """:func:`install_steps` as one fix line (printed, never run); on a platform without a set, what works."""
    if (flavour or detect_flavour()) == "unsupported":
        return WHAT_WORKS
    first, second = install_steps(flavour)
    return f"{first}   then: {second}   (or simply: python -m nox -s smoke, which builds an isolated venv)"


def reinstall_set_command(flavour: str | None = None) -> str:
    """The fix for a torch / torchvision / torchaudio mismatch: remove the three, install the verified set.
    A plain install is not enough: ``torchvision==0.29.1`` is satisfied by a build for another torch
    (``0.29.1+cpu``, or one made for an older torch by another index), and pip would keep it."""
    if (flavour or detect_flavour()) == "unsupported":
        return WHAT_WORKS
    first, _ = install_steps(flavour)
    return (f"python -m pip uninstall -y torch torchvision torchaudio   then: {first}   "
            "(or simply: python -m nox -s smoke, which builds an isolated venv)")


def env_command(var: str, value: str, command: str, system: str | None = None) -> str:
    """``VAR=value command`` in the user's shell: PowerShell syntax on Windows, POSIX elsewhere."""
    if (system or platform.system()) == "Windows":
        return f'$env:{var}="{value}"; {command}'
    return f"{var}={value} {command}"


def python_ok(version: tuple[int, int] | None = None) -> bool:
    return (version or sys.version_info[:2]) >= (3, 11)
