"""GPU checks (nox -s cuda): QLoRA and the throughput preset on a real CUDA device.
Skipped cleanly, with the reason, on machines without one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "smoke"))


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


requires_cuda = pytest.mark.skipif(not _cuda(), reason="no CUDA device on this machine")


@pytest.fixture()
def root(tmp_path) -> Path:
    from runs_support import kit_root

    return kit_root(tmp_path)


def _train(root: Path, *flags: str) -> dict:
    from runs_support import invoke_train

    return invoke_train(root, *flags)[1]


@requires_cuda
def test_doctor_sees_the_gpu():
    out = subprocess.run([sys.executable, "-m", "invoke", "doctor", "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    acc = next(c for c in json.loads(out.stdout) if c["name"] == "accelerator")
    assert acc["status"] == "ok" and acc["detail"].startswith("CUDA")


@requires_cuda
def test_bf16_lora_trains(root, tiny_model):
    import torch

    res = _train(root, "--model", str(tiny_model), "--template", "qwen", "--dataset", "capitals", "--epochs", "1",
                 "--batch-size", "8", "--cutoff", "128")
    args = (Path(res["run_dir"]) / "training_args.yaml").read_text(encoding="utf-8")
    assert res["status"] == "finished"
    assert ("bf16: true" in args) == torch.cuda.is_bf16_supported()


@requires_cuda
def test_qlora_4bit_trains(root, tiny_model):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    res = _train(root, "--model", str(tiny_model), "--template", "qwen", "--dataset", "capitals", "--epochs", "2",
                 "--batch-size", "8", "--cutoff", "128", "--quantization-bit", "4")
    args = (Path(res["run_dir"]) / "training_args.yaml").read_text(encoding="utf-8")
    assert "quantization_bit: 4" in args and res["status"] == "finished"


@requires_cuda
def test_throughput_preset_on_the_card(root, tiny_model):
    res = _train(root, "--model", str(tiny_model), "--template", "qwen", "--dataset", "capitals", "--epochs", "1",
                 "--cutoff", "128", "--preset", "throughput")
    args = (Path(res["run_dir"]) / "training_args.yaml").read_text(encoding="utf-8")
    assert "packing: true" in args and res["status"] == "finished"


def test_preset_sizing_needs_no_gpu():
    """Runs everywhere so the session never collects zero tests: sizing is pure arithmetic."""
    from finetune.llama_factory.presets import ModelShape, size_batch

    batch, ckpt, _ = size_batch(80.0, ModelShape(896, 24, 151936, 494_000_000), 1024)
    assert batch >= 8 and ckpt is False
