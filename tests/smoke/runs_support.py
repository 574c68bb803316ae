"""Shared pieces for the runs/inference smoke tests: a tiny dataset and runs trained once per session.

Each LLaMA-Factory training costs 10-20 s here, so every run is trained once per test process and
shared (``trained(...)`` memoises by name).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

CAPITALS = [
    ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Kenya", "Nairobi"),
]

SYSTEM = "You answer with one short sentence."


def conversations(n: int = 40) -> list[dict]:
    out = []
    for i in range(n):
        country, city = CAPITALS[i % len(CAPITALS)]
        msgs = [{"role": "user", "content": f"What is the capital of {country}?"},
                {"role": "assistant", "content": f"The capital of {country} is {city}."}]
        if i % 2:
            msgs.insert(0, {"role": "system", "content": SYSTEM})
        out.append({"messages": msgs})
    return out


def write_dataset(data_dir: Path, name: str = "capitals", n: int = 40) -> Path:
    """ChatML JSONL + a dataset_info.json entry (sharegpt mapping with system_tag)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    file = data_dir / f"{name}.jsonl"
    with file.open("w", encoding="utf-8") as fh:
        for rec in conversations(n):
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    info_path = data_dir / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    info[name] = {
        "file_name": file.name, "formatting": "sharegpt", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"},
    }
    info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return file


_ROOT: Path | None = None
_MEMO: dict[str, object] = {}


def shared_root() -> Path:
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="runs-smoke-"))
        atexit.register(shutil.rmtree, _ROOT, True)
        (_ROOT / "pyproject.toml").write_text("", encoding="utf-8")
        (_ROOT / "finetune").mkdir()
    return _ROOT


def shared_layout():
    from finetune.layout import Layout

    layout = Layout.from_env(root=shared_root(), env={})
    if not (layout.data_dir / "dataset_info.json").is_file():
        write_dataset(layout.data_dir)
    return layout


def tiny_model_dir() -> Path:
    if "model" not in _MEMO:
        from finetune.models.tiny import make_tiny_model

        _MEMO["model"] = make_tiny_model(shared_root() / "models" / "tiny-qwen2")
    return _MEMO["model"]  # type: ignore[return-value]


def spec(**kw):
    base = dict(model_path=str(tiny_model_dir()), template="qwen", dataset=["capitals"],
                dataset_dir=str(shared_layout().data_dir), learning_rate=5e-3, num_train_epochs=3.0,
                per_device_train_batch_size=4, gradient_accumulation_steps=1, cutoff_len=128,
                logging_steps=2, save_steps=10, lora_rank=8, compute_type="fp32")
    base.update(kw)
    return spec_cls()(**base)


def spec_cls():
    from finetune.llama_factory.args import TrainSpec

    return TrainSpec


def trained(name: str = "finished", **kw):
    """A finished tiny LoRA run (trained once per test process)."""
    if name not in _MEMO:
        from finetune.llama_factory.train import train

        os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
        _MEMO[name] = train(shared_layout(), spec(**kw), run_id=f"20250101-000000-{name}", progress=False)
    return _MEMO[name]


def kit_root(folder: Path, n: int = 32) -> Path:
    """A throwaway project root (pyproject + finetune/) with the capitals dataset registered."""
    (folder / "pyproject.toml").write_text("", encoding="utf-8")
    (folder / "finetune").mkdir(exist_ok=True)
    write_dataset(folder / "dataset" / "llamafactory", n=n)
    return folder


def invoke_train(root: Path, *flags: str, timeout: float = 900):
    """`invoke train --json FLAGS` against ``root``; (process, parsed result). Fails the test on error."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "FINETUNE_ROOT": str(root), "DISABLE_VERSION_CHECK": "1"}
    proc = subprocess.run([sys.executable, "-m", "invoke", "train", "--json", *flags], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])
