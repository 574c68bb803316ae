"""Legacy entry point, kept for compatibility: chat with a LoRA run (or a merged model) exactly like
``invoke infer`` (finetune.inference.chat), reading LLaMA-Factory's output layout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    print("finetune/infer_lora_chat.py is legacy; use `invoke infer RUN`. Answering through finetune.inference.chat.",
          file=sys.stderr)
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
    a = p.parse_args(argv)

    from finetune.cli import guarded
    from finetune.errors import UserError
    from finetune.inference.chat import infer
    from finetune.layout import Layout

    def run():
        ref = a.run or a.adapter
        if not ref:
            raise UserError("which run? none given", fix="python finetune/infer_lora_chat.py RUN_ID (see invoke runs)")
        return infer(Layout.from_env(), ref, prompt=a.prompt, prompts_file=a.prompts, out=a.out, system=a.system,
                     max_new_tokens=a.max_new_tokens, temperature=a.temperature, base=a.base, template=a.template,
                     as_json=a.json)

    result = guarded(run, as_json=a.json)
    if a.json:
        print(json.dumps(result, ensure_ascii=False))
    elif a.prompts:
        print(f"{result['prompts']} answers written to {result['out']}")
    return 0


def _script_path_fix() -> None:
    """Run as a script, this file's folder would shadow top-level names; put the project root first."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))


if __name__ == "__main__":
    _script_path_fix()
    raise SystemExit(main())
