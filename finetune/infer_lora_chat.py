"""Legacy entry point, kept for compatibility: chat with a LoRA run (or a merged model) exactly like
``invoke infer`` (finetune.inference.chat), reading LLaMA-Factory's output layout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The flags (every flag of the invoke task, plus the old spellings)."""
    p = argparse.ArgumentParser(description="Chat with a fine-tuned run (legacy; use invoke infer).")
    p.add_argument("run", nargs="?", help="run id, run / adapter / checkpoint folder, or merged model")
    p.add_argument("--adapter", "--adapter_name_or_path", "--lora", "--lora_path", dest="adapter",
                   help="adapter folder (same as RUN)")
    p.add_argument("--base", "--base_model", "--model_name_or_path", dest="base", help="base model folder")
    p.add_argument("--template", help="chat template, to override the run's")
    p.add_argument("--prompt", help="answer one prompt and exit")
    p.add_argument("--prompts", help="file of prompts (.jsonl or .txt); answers go to --out as JSONL")
    p.add_argument("--out", help="answers file (default PROMPTS.answers.jsonl)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=256,
                   help="answer length limit")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _call(layout, a: argparse.Namespace, ref: str) -> dict:
    from finetune.inference.chat import infer

    return infer(layout, ref, prompt=a.prompt, prompts_file=a.prompts, out=a.out, system=a.system,
                 max_new_tokens=a.max_new_tokens, temperature=a.temperature, base=a.base, template=a.template,
                 as_json=a.json)


def main(argv: list[str] | None = None) -> int:
    from finetune.legacy import run_legacy

    return run_legacy("finetune/infer_lora_chat.py", "infer", "finetune.inference.chat", build_parser(), _call,
                      lambda a, result: f"{result['prompts']} answers written to {result['out']}" if a.prompts else "", argv)


if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # the project root, not finetune/, comes first
    raise SystemExit(main())
