"""Make the deterministic tiny Qwen2 model (+ tokenizer with chat template) that tests and the demo use.

    python tools/make_tiny_model.py --out finetune/cache/models/tiny-qwen2
    python tools/make_tiny_model.py --kind moe --out finetune/cache/models/tiny-qwen2-moe
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.layout import Layout  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder (default: <models_dir>/tiny-qwen2[-moe])")
    parser.add_argument("--kind", choices=["dense", "moe"], default="dense", help="Qwen2 or Qwen2-MoE")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed = same files)")
    parser.add_argument("--pretrain-on", type=Path, nargs="*", default=[],
                        help="ChatML JSONL files for a short full-parameter pass (the demo uses it)")
    parser.add_argument("--pretrain-steps", type=int, default=0, help="steps of that pass (0 = none)")
    args = parser.parse_args(argv)
    from finetune.models.tiny import make_tiny_model

    layout = Layout.from_env()
    out = args.out or layout.models_dir / ("tiny-qwen2" if args.kind == "dense" else "tiny-qwen2-moe")
    path = make_tiny_model(out, kind=args.kind, seed=args.seed, pretrain_on=args.pretrain_on,
                           pretrain_steps=args.pretrain_steps)
    print(f"tiny {args.kind} model written to {path}")
    print(f"next: invoke train --model {path} --template qwen --dataset <name>")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
