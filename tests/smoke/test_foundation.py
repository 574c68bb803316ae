"""Foundation acceptance: the real `llamafactory-cli train` trains the tiny model on the CPU, and the
doctor diagnoses a real torch / torchvision / torchaudio mismatch without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finetune.env.portable import script_path

pytestmark = pytest.mark.smoke
ROOT = Path(__file__).resolve().parents[2]


def _chatml(path: Path, n: int = 32) -> None:
    rows = [{"messages": [{"role": "system", "content": "You are a calculator."},
                          {"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def test_llamafactory_cli_trains_tiny_model(tmp_path, tiny_model):
    _chatml(tmp_path / "calc.jsonl")
    info = {"calc": {"file_name": "calc.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
                     "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                              "assistant_tag": "assistant", "system_tag": "system"}}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    out = tmp_path / "out"
    args = {"model_name_or_path": str(tiny_model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
            "lora_target": "all", "dataset": "calc", "dataset_dir": str(tmp_path), "template": "qwen",
            "cutoff_len": 128, "output_dir": str(out), "logging_steps": 2, "save_steps": 1000,
            "per_device_train_batch_size": 8, "learning_rate": 5e-3, "num_train_epochs": 6,
            "report_to": "none", "preprocessing_num_workers": 1, "plot_loss": True}
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump(args), encoding="utf-8")
    cli = script_path("llamafactory-cli")  # <env>/bin, or <env>\Scripts on Windows
    proc = subprocess.run([str(cli), "train", str(cfg)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DISABLE_VERSION_CHECK": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    losses = [r["loss"] for r in map(json.loads, (out / "trainer_log.jsonl").read_text("utf-8").splitlines())
              if "loss" in r]
    assert len(losses) >= 5
    assert losses[-1] < losses[0] * 0.9, f"loss did not fall: {losses}"


def test_doctor_diagnoses_a_real_mismatched_venv(tmp_path):
    """CPU torch 2.13.0 with the index's torchvision/torchaudio: the wall users hit."""
    venv = tmp_path / "mismatch"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True, timeout=900)
    subprocess.run([*pip, "--no-deps", "torchvision==0.29.1", "torchaudio==2.11.0"], check=True, timeout=900)
    subprocess.run([*pip, "invoke", "pyyaml", "orjson", "rich", "psutil", "httpx", "packaging"], check=True,
                   timeout=900)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True, timeout=900)
    out = subprocess.run([str(py), "-m", "invoke", "doctor", "--json"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert "Traceback" not in out.stdout + out.stderr
    assert out.returncode != 0
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    ts = checks["torch set"]
    assert ts["status"] == "fail"
    assert "torchvision::nms" in ts["detail"] and "2.13.0" in ts["detail"]
    assert "torchaudio" in ts["detail"]
    assert "torch==2.14.1" in ts["fix"] and "torchvision==0.29.1" in ts["fix"]
    assert checks["llamafactory"]["status"] == "fail" and "pip install" in checks["llamafactory"]["fix"]


def test_doctor_reports_this_stack():
    out = subprocess.run([sys.executable, "-m", "invoke", "doctor", "--json"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert checks["torch set"]["status"] == "ok", checks["torch set"]
    assert "torchvision" in checks["torch set"]["detail"] and "torchaudio" in checks["torch set"]["detail"]
    assert checks["llamafactory"]["detail"] == "llamafactory 0.9.5"
    assert checks["accelerator"]["detail"].startswith(("CPU", "CUDA", "Apple"))


def test_tiny_model_is_deterministic(tmp_path):
    import hashlib

    from finetune.models.tiny import make_tiny_model

    def digest(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}

    a = digest(make_tiny_model(tmp_path / "a"))
    b = digest(make_tiny_model(tmp_path / "b"))
    assert "model.safetensors" in a and "tokenizer.json" in a
    assert a == b
    c = digest(make_tiny_model(tmp_path / "c", seed=1))
    assert c["model.safetensors"] != a["model.safetensors"]
