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


def detect_flavour(system: str | None = None, machine: str | None = None,
                   env: dict[str, str] | None = None) -> str:
    """The torch flavour for this platform; ``FINETUNE_TORCH_FLAVOUR`` overrides."""
    env = dict(os.environ) if env is None else env
    if env.get(FLAVOUR_ENV):
        return env[FLAVOUR_ENV]
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if system == "Darwin":
        return "macos"
    if system == "Windows":
        return "windows"
    if machine in {"aarch64", "arm64"}:
        return "linux-aarch64"
    return "linux-cuda"


def torch_set(flavour: str | None = None) -> TorchSet:
    flavour = flavour or detect_flavour()
    if flavour not in TORCH_SETS:
        known = ", ".join(sorted(TORCH_SETS))
        raise KeyError(f"unknown torch flavour {flavour!r}; known: {known}")
    return TORCH_SETS[flavour]


def install_command(flavour: str | None = None, python: str | None = None) -> str:
    """The exact commands that install a working training stack here (printed, never run)."""
    ts = torch_set(flavour)
    py = python or ("py -3" if platform.system() == "Windows" else "python")
    index = os.environ.get(TORCH_INDEX_ENV) or ts.index_url
    torch_cmd = f"{py} -m pip install " + " ".join(ts.requirements())
    if index:
        torch_cmd += f" --index-url {index}"
    return (f"{torch_cmd} && {py} -m pip install -e \".[train]\" " + " ".join(ts.requirements())
            + "   (or simply: python -m nox -s smoke, which builds an isolated venv)")


def python_ok(version: tuple[int, int] | None = None) -> bool:
    return (version or sys.version_info[:2]) >= (3, 11)
