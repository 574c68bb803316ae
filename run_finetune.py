#!/usr/bin/env python
"""Legacy entry point, kept for compatibility: trains headless exactly like ``invoke train``.

    python run_finetune.py --model PATH --template qwen --dataset NAME [--epochs 3 ...]
    python run_finetune.py --resume RUN_ID
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    print("run_finetune.py is legacy; use `invoke train` (same flags). Training through finetune.llama_factory.train.",
          file=sys.stderr)
    p = argparse.ArgumentParser(description="Train headless with the arguments the Web UI writes (legacy; use invoke train).")
    p.add_argument("--model", "--model_name_or_path", dest="model", default="", help="base model folder")
    p.add_argument("--template", default="default", help="chat template (qwen, llama3, ...)")
    p.add_argument("--dataset", action="append", default=[], help="registered dataset name (repeatable or a,b)")
    p.add_argument("--run-name", "--run_name", dest="run_name", default="", help="name added to the run id")
    p.add_argument("--epochs", "--num_train_epochs", dest="epochs", type=float, default=3.0, help="epochs")
    p.add_argument("--lr", "--learning_rate", dest="lr", type=float, default=5e-5, help="learning rate")
    p.add_argument("--batch-size", "--per_device_train_batch_size", dest="batch_size", type=int, default=2,
                   help="per-device batch size")
    p.add_argument("--cutoff", "--cutoff_len", dest="cutoff", type=int, default=2048, help="max tokens")
    p.add_argument("--lora-rank", "--lora_rank", dest="lora_rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--max-samples", "--max_samples", dest="max_samples", type=int, default=100000, help="max samples")
    p.add_argument("--save-steps", "--save_steps", dest="save_steps", type=int, default=100, help="checkpoint every N steps")
    p.add_argument("--resume", default="", help="continue this run id from its latest checkpoint")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)

    from finetune.cli import guarded
    from finetune.errors import UserError
    from finetune.layout import Layout
    from finetune.llama_factory import train as tr

    layout = Layout.from_env()

    def run():
        if a.resume:
            return tr.train(layout, None, run_id=a.resume, resume=True, progress=not a.json)
        if not a.model or not a.dataset:
            raise UserError("--model and --dataset are needed", fix="python run_finetune.py --model PATH "
                            "--template qwen --dataset NAME (or: invoke train ...)")
        spec = tr.spec_from_flags(layout, model=a.model, template=a.template, dataset=a.dataset, epochs=a.epochs,
                                  lr=a.lr, batch_size=a.batch_size, cutoff=a.cutoff, lora_rank=a.lora_rank,
                                  max_samples=a.max_samples, save_steps=a.save_steps)
        return tr.train(layout, spec, name=a.run_name, progress=not a.json)

    result = guarded(run, as_json=a.json)
    if a.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
    else:
        print(f"run {result.run_id} {result.status}: {result.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
