"""Tokens/s of LoRA SFT under the Web UI's defaults vs ``--preset throughput``, same model and data,
measured in one run on a CUDA machine. Prints the ratio and writes both loss curves.

    python benchmarks/gpu_throughput.py [--conversations 2000] [--out benchmarks/out/gpu]

The model has Qwen2-0.5B's shape with random weights (nothing is downloaded); the conversations
are synthetic, about 1,000 tokens each. Needs torch with CUDA and llamafactory 0.9.5 (on a lent
machine: carry a venv or wheels and set DISABLE_VERSION_CHECK=1; docs/field-notes.md#h200-throughput). Goal: >= 2.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WEBUI_DEFAULTS = {  # what LlamaBoard's form holds when nobody touches it (0.9.5), batch as in docs/field-notes.md#h200-throughput
    "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "bf16": True,
}


def make_model(out: Path) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from finetune.models.tiny import build_tokenizer

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    tok = build_tokenizer([f"word{i} token{i % 97} sample text {i * 7}" for i in range(5000)], vocab_size=4096)
    cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                      num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tok.pad_token_id)
    Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_data(folder: Path, n: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    words = [f"word{i}" for i in range(3000)]
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "synthetic.jsonl").open("w", encoding="utf-8") as fh:
        for _ in range(n):
            user = " ".join(rng.choices(words, k=rng.randint(150, 300)))
            answer = " ".join(rng.choices(words, k=rng.randint(250, 450)))
            fh.write(json.dumps({"messages": [{"role": "user", "content": user},
                                              {"role": "assistant", "content": answer}]}) + "\n")
    from finetune.data.chatml import dataset_entry

    (folder / "dataset_info.json").write_text(json.dumps({"synthetic": dataset_entry("synthetic.jsonl")}),
                                              encoding="utf-8")
    return n


def run(name: str, model: Path, data: Path, out: Path, extra: dict, max_steps: int) -> dict:
    import yaml

    args = {"model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
            "lora_rank": 16, "lora_target": "all", "dataset": "synthetic", "dataset_dir": str(data),
            "template": "qwen", "cutoff_len": 1024, "output_dir": str(out / name), "overwrite_output_dir": True,
            "logging_steps": 5, "save_strategy": "no", "learning_rate": 1e-4, "max_steps": max_steps,
            "report_to": "none", "preprocessing_num_workers": 8, "include_num_input_tokens_seen": True,
            "plot_loss": True, **extra}
    cfg = out / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(args), encoding="utf-8")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llamafactory.cli", "train", str(cfg)], capture_output=True,
                          text=True, env={**os.environ, "DISABLE_VERSION_CHECK": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads((out / name / "train_results.json").read_text(encoding="utf-8"))
    logs = [json.loads(line) for line in (out / name / "trainer_log.jsonl").read_text("utf-8").splitlines()]
    tokens = res.get("num_input_tokens_seen") or logs[-1].get("total_tokens", 0)
    return {"name": name, "tokens": tokens, "runtime_s": res["train_runtime"], "wall_s": wall,
            "tokens_per_s": tokens / res["train_runtime"], "losses": [r["loss"] for r in logs if "loss" in r],
            "final_loss": next((r["loss"] for r in reversed(logs) if "loss" in r), None)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=2000, help="synthetic conversations")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per configuration")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "gpu", help="work folder")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (benchmarks/gpu_suite.sh runs it on a lent one)")
        return 2
    from finetune.llama_factory.presets import ModelShape, throughput_preset

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model = make_model(out / "model")
    make_data(out / "data", args.conversations)
    free, _ = torch.cuda.mem_get_info()
    try:
        import flash_attn  # noqa: F401
        fa = True
    except ImportError:
        fa = False
    try:
        import liger_kernel  # noqa: F401
        liger = True
    except ImportError:
        liger = False
    preset = throughput_preset(ModelShape.from_config(model), free / 2**30, 1024,
                               bf16=torch.cuda.is_bf16_supported(), flash_attn_installed=fa,
                               liger_installed=liger)
    print("preset:", json.dumps(preset.args), "|", "; ".join(preset.reasons))
    base = run("defaults", model, out / "data", out, WEBUI_DEFAULTS, args.steps)
    # the same number of tokens: fewer, larger steps
    steps = max(5, round(args.steps * 8 / preset.args["per_device_train_batch_size"]))
    fast = run("preset", model, out / "data", out, preset.args, steps)
    ratio = fast["tokens_per_s"] / base["tokens_per_s"]
    print(f"{'config':<10}{'tokens':>12}{'train s':>10}{'tokens/s':>12}{'last loss':>11}")
    for r in (base, fast):
        print(f"{r['name']:<10}{r['tokens']:>12}{r['runtime_s']:>10.1f}{r['tokens_per_s']:>12.0f}"
              f"{(r['losses'] or [float('nan')])[-1]:>11.3f}")
    print(f"throughput ratio preset/defaults: {ratio:.2f}x (goal >= 2.5x)")
    (out / "result.json").write_text(json.dumps({"defaults": base, "preset": fast, "ratio": ratio,
                                                 "preset_args": preset.args, "gpu": torch.cuda.get_device_name(0)},
                                                indent=2), encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for r in (base, fast):
            xs = [i / max(len(r["losses"]) - 1, 1) for i in range(len(r["losses"]))]
            plt.plot(xs, r["losses"], label=f"{r['name']} ({r['tokens_per_s']:.0f} tok/s)")
        plt.xlabel("fraction of the same token budget")
        plt.ylabel("loss")
        plt.legend()
        plt.savefig(out / "loss_curves.png", dpi=100)
        print(f"loss curves: {out / 'loss_curves.png'}")
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
