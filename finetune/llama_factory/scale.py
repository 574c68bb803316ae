"""Scale-out settings for one run: distributed launch, DeepSpeed, QLoRA and the throughput preset,
checked together (every problem in one message) and turned into training arguments + environment.

Light: CUDA is detected with ``nvidia-smi`` (no torch import); the trainer child checks for real.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from finetune.env.portable import ddp_backend
from finetune.errors import UserError
from finetune.llama_factory.distributed import DEEPSPEED_CHOICES, DistSpec
from finetune.llama_factory.presets import ModelShape, throughput_preset

PRESETS = ("throughput",)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cuda_free_gib() -> float | None:
    """Free memory of GPU 0 in GiB from nvidia-smi, or None without an NVIDIA GPU."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.splitlines()[0]) / 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


# Preset keys that are TrainSpec fields (shown in their own Web UI boxes), not "extra arguments".
SPEC_FIELDS = frozenset({"per_device_train_batch_size", "gradient_accumulation_steps", "cutoff_len"})


@dataclass(frozen=True)
class ScaleSettings:
    """What the scale flags mean for one run. ``problems`` (with ``fixes``) say what is wrong; the
    train plan reports them together with every other problem."""

    fields: dict = field(default_factory=dict)  # TrainSpec field overrides
    extra: dict = field(default_factory=dict)  # the page's "Extra arguments"
    env: dict[str, str] = field(default_factory=dict)  # LLaMA-Factory's launcher variables
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()


def scale_settings(model_path: str, dist: DistSpec, preset: str | None = None, quantization_bit: int | None = None,
                   cutoff_len: int = 2048, free_gib: float | None | str = "detect") -> ScaleSettings:
    """Training arguments (``extra``), launcher variables (``env``) and problems for these flags.

    ``extra["deepspeed"]`` holds the config *kind* (z2, ...); the train plan turns it into the path
    of the config written into the run folder.
    """
    free = cuda_free_gib() if free_gib == "detect" else free_gib
    cuda = free is not None
    problems = list(dist.problems())
    fixes = []
    if preset and preset not in PRESETS:
        problems.append(f"--preset {preset!r} is not one of {', '.join(PRESETS)}")
    if quantization_bit not in (None, 4, 8):
        problems.append(f"--quantization-bit {quantization_bit} must be 4 or 8")
    elif quantization_bit:
        if not cuda:
            problems.append(f"--quantization-bit {quantization_bit} (QLoRA) needs an NVIDIA GPU with CUDA; "
                            "none was found (no nvidia-smi)")
            fixes.append("drop --quantization-bit on this machine (plain LoRA), or run on a CUDA machine")
        if not _installed("bitsandbytes"):
            problems.append("--quantization-bit needs bitsandbytes, which is not installed")
            fixes.append('python -m pip install "bitsandbytes>=0.43"')
    if dist.deepspeed and dist.deepspeed in DEEPSPEED_CHOICES and not _installed("deepspeed"):
        problems.append(f"--deepspeed {dist.deepspeed} needs the deepspeed package, which is not installed")
        fixes.append('python -m pip install "deepspeed>=0.10,<=0.16.9"')

    fields_: dict = {}
    extra: dict = {}
    notes: list[str] = []
    if quantization_bit in (4, 8):
        fields_["quantization_bit"] = quantization_bit
    if dist.deepspeed:
        extra["deepspeed"] = dist.deepspeed
    if dist.distributed and not cuda:
        extra["ddp_backend"] = "gloo"
        notes.append("no CUDA: ranks talk over gloo on the CPU")
    elif dist.distributed and ddp_backend(cuda) == "gloo":  # Windows: PyTorch has no NCCL there
        extra["ddp_backend"] = "gloo"
        notes.append("Windows: ranks talk over gloo (PyTorch has no NCCL on Windows)")
    if dist.distributed:
        notes.append(f"torchrun: {dist.nnodes} node(s) x {dist.nproc_per_node} process(es); "
                     f"node {dist.node_rank}, master {dist.master_addr}:{dist.master_port}")
    if preset == "throughput":
        try:
            shape = ModelShape.from_config(Path(model_path)) if (Path(model_path) / "config.json").is_file() else None
        except (UserError, KeyError, TypeError, AttributeError):
            shape = None
        if shape is None:
            notes.append("--preset throughput: model config not readable here; defaults kept")
        else:
            p = throughput_preset(shape, free, cutoff_len, bf16=cuda, flash_attn_installed=_installed("flash_attn"),
                                  liger_installed=_installed("liger_kernel"), quant_bits=quantization_bit)
            fields_.update({k: v for k, v in p.args.items() if k in SPEC_FIELDS})
            extra.update({k: v for k, v in p.args.items() if k not in SPEC_FIELDS})
            notes += [f"--preset throughput: {r}" for r in p.reasons]
    return ScaleSettings(fields=fields_, extra=extra, env=dist.env(), notes=tuple(notes), problems=tuple(problems),
                         fixes=tuple(fixes))
