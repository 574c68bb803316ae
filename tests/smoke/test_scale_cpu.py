"""Scale paths on the CPU: two torchrun ranks over gloo, and LoRA on a tiny Qwen2-MoE model, both
through `invoke train` with the real LLaMA-Factory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs_support import invoke_train, kit_root  # noqa: E402

pytestmark = pytest.mark.smoke
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def root(tmp_path) -> Path:
    return kit_root(tmp_path)


def test_two_ranks_through_torchrun_on_gloo(root, tiny_model):
    proc, result = invoke_train(root, "--model", str(tiny_model), "--template", "qwen", "--dataset", "capitals",
                                 "--epochs", "2", "--batch-size", "4", "--cutoff", "128", "--lr", "5e-3",
                                 "--nproc-per-node", "2", "--master-port", str(_free_port()))
    run_dir = Path(result["run_dir"])
    assert (run_dir / "adapter_model.safetensors").is_file()
    args = yaml.safe_load((run_dir / "training_args.yaml").read_text(encoding="utf-8"))
    assert args["ddp_backend"] == "gloo"
    log = Path(result["log_path"]).read_text(encoding="utf-8", errors="replace")
    assert "torchrun" in log.lower() or "world_size: 2" in log.lower() or "world size: 2" in log.lower(), log[-2000:]
    assert "gloo" in proc.stderr


def test_lora_on_a_tiny_moe_model(root, tmp_path_factory):
    from finetune.models.tiny import make_tiny_model

    moe = make_tiny_model(tmp_path_factory.mktemp("moe") / "tiny-qwen2-moe", kind="moe")
    assert json.loads((moe / "config.json").read_text(encoding="utf-8"))["model_type"] == "qwen2_moe"
    _, result = invoke_train(root, "--model", str(moe), "--template", "qwen", "--dataset", "capitals",
                              "--epochs", "3", "--batch-size", "8", "--cutoff", "128", "--lr", "5e-3")
    run_dir = Path(result["run_dir"])
    assert result["status"] == "finished"
    adapter = json.loads((run_dir / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter["base_model_name_or_path"] == str(moe)
    results = json.loads((run_dir / "train_results.json").read_text(encoding="utf-8"))
    assert 0 < results["train_loss"] < 20
    # LoRA reached the experts, not only attention
    assert any("proj" in m for m in adapter["target_modules"]), adapter["target_modules"]


def test_deepspeed_config_travels_with_the_run(root, tiny_model):
    """Without the deepspeed package the flag is refused with the install command, before any run."""
    env = {**os.environ, "FINETUNE_ROOT": str(root)}
    proc = subprocess.run([sys.executable, "-m", "invoke", "train", "--model", str(tiny_model), "--dataset",
                           "capitals", "--deepspeed", "z3"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        assert proc.returncode == 2 and "pip install" in proc.stderr and "deepspeed" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not any((root / "finetune" / "outputs" / "llamafactory").glob("*")) if (
            root / "finetune" / "outputs" / "llamafactory").exists() else True
    else:
        pytest.skip("deepspeed is installed: the GPU suite covers it")
