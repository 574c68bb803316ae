"""``--preset throughput``: arguments that keep a big card busy, sized to its free memory.

LLaMA-Factory's defaults (batch 8-ish, gradient checkpointing on, no packing) left most of an
H200 idle: 20.9k tokens/s against 59.4k with packing, batch 32 and checkpointing off
(docs/field-notes.md#h200-throughput). The sizing below is a simple activation-memory model (Korthikanti et al.:
~34·h bytes per token per layer in 16-bit without recomputation, ~2·h with it, plus the fp32
logits and their gradient), checked against those measured numbers in the unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from finetune import fileio

GIB = 2**30
CUDA_CONTEXT_GIB = 1.5
HEADROOM = 0.85  # leave 15 % for the allocator's fragmentation and spikes
MAX_BATCH = 64


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    vocab_size: int
    num_params: int

    @classmethod
    def from_config(cls, model_dir: Path) -> ModelShape:
        cfg = fileio.read_json(Path(model_dir) / "config.json", {})
        cfg = cfg.get("text_config", cfg)
        h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
        inter = cfg.get("intermediate_size", 4 * h)
        params = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2) + layers * (4 * h * h + 3 * h * inter)
        return cls(h, layers, vocab, params)


@dataclass
class Preset:
    args: dict
    reasons: list[str] = field(default_factory=list)


def bytes_per_token(shape: ModelShape, checkpointing: bool) -> float:
    per_layer = (2 if checkpointing else 34) * shape.hidden_size * 2
    layers = shape.num_layers * per_layer + (34 * shape.hidden_size * 2 if checkpointing else 0)
    logits = shape.vocab_size * 4 * 2
    return layers + logits


def _pow2_floor(n: float) -> int:
    b = 1
    while b * 2 <= n:
        b *= 2
    return b


def size_batch(free_gib: float, shape: ModelShape, cutoff_len: int, quant_bits: int | None = None) -> tuple[int, bool, str]:
    """(per-device batch, gradient checkpointing on?, why) for this much free memory."""
    weight_bytes = shape.num_params * (0.55 if quant_bits == 4 else 1.1 if quant_bits == 8 else 2)
    budget = free_gib * GIB * HEADROOM - CUDA_CONTEXT_GIB * GIB - weight_bytes
    if budget <= 0:
        return 1, True, f"{free_gib:.0f} GiB free barely holds the weights: batch 1 with checkpointing"
    fast = budget / (bytes_per_token(shape, False) * cutoff_len)
    if fast >= 8:
        batch = min(_pow2_floor(fast), MAX_BATCH)
        return batch, False, f"{free_gib:.0f} GiB free fits {fast:.0f} sequences of {cutoff_len} without recomputation"
    slow = budget / (bytes_per_token(shape, True) * cutoff_len)
    batch = max(1, min(_pow2_floor(slow), MAX_BATCH))
    return batch, True, f"only {fast:.1f} sequences fit without recomputation: checkpointing on, batch {batch}"


def throughput_preset(
    shape: ModelShape,
    free_gib: float | None,
    cutoff_len: int = 1024,
    bf16: bool = True,
    flash_attn_installed: bool = False,
    liger_installed: bool = False,
    quant_bits: int | None = None,
    stage: str = "sft",
) -> Preset:
    """Training arguments for throughput on this card (``free_gib=None``: no CUDA, keep defaults)."""
    if free_gib is None:
        return Preset({}, ["no CUDA device: the throughput preset only changes GPU runs; defaults kept"])
    batch, ckpt, why = size_batch(free_gib, shape, cutoff_len, quant_bits)
    args: dict = {
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1,
        "packing": True,
        "disable_gradient_checkpointing": not ckpt,
        "flash_attn": "fa2" if flash_attn_installed else "sdpa",
        "cutoff_len": cutoff_len,
    }
    reasons = [why, "packing: no padding tokens, every position trains",
               f"attention: {args['flash_attn']} ({'flash-attn installed' if flash_attn_installed else 'PyTorch SDPA'})"]
    if stage == "sft":
        args["neat_packing"] = True
        reasons.append("neat_packing: packed sequences do not attend across conversations")
    if bf16:
        args["bf16"] = True
        reasons.append("bf16 compute")
    else:
        args["fp16"] = True
    if liger_installed:
        args["enable_liger_kernel"] = True
        reasons.append("liger kernel: fused RMSNorm/SwiGLU/cross-entropy")
    return Preset(args, reasons)
