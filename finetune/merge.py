"""Legacy entry point, kept for compatibility: ``python finetune/merge.py RUN`` merges a LoRA
adapter into its base exactly like ``invoke merge`` (finetune.inference.merge)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The flags (every flag of the invoke task, plus the old spellings)."""
    p = argparse.ArgumentParser(description="Merge a LoRA adapter into its base model (legacy; use invoke merge).")
    p.add_argument("run", nargs="?", help="run id, run / adapter / checkpoint folder")
    p.add_argument("--adapter", "--adapter_name_or_path", "--lora", dest="adapter", help="adapter folder (same as RUN)")
    p.add_argument("--base", "--base_model", "--model_name_or_path", dest="base", help="base model folder")
    p.add_argument("--out", "--output", "--export_dir", dest="out", help="merged model folder (default RUN/merged)")
    p.add_argument("--template", help="chat template, to override the run's")
    p.add_argument("--dtype", help="float32 / float16 / bfloat16 (default: the base's)")
    p.add_argument("--check", type=int, default=3, help="prompts for the adapter-vs-merged check (0 skips)")
    p.add_argument("--force", action="store_true", help="replace an existing merged folder")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _call(layout, a: argparse.Namespace, ref: str) -> dict:
    from finetune.inference.merge import merge

    return merge(layout, ref, out_dir=a.out, base=a.base, template=a.template, dtype=a.dtype, n_check=a.check,
                 force=a.force)


def main(argv: list[str] | None = None) -> int:
    from finetune.legacy import run_legacy

    return run_legacy("finetune/merge.py", "merge", "finetune.inference.merge", build_parser(), _call,
                      lambda a, result: f"merged into {result['merged']}", argv)


if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project root, not finetune/, comes first
    raise SystemExit(main())
