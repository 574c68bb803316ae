"""Legacy entry point, kept for compatibility: ``python finetune/merge.py RUN`` merges a LoRA
adapter into its base exactly like ``invoke merge`` (finetune.inference.merge)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    print("finetune/merge.py is legacy; use `invoke merge RUN`. Merging through finetune.inference.merge.",
          file=sys.stderr)
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
    a = p.parse_args(argv)

    from finetune.cli import guarded
    from finetune.errors import UserError
    from finetune.inference.merge import merge
    from finetune.layout import Layout

    def run():
        ref = a.run or a.adapter
        if not ref:
            raise UserError("which adapter? none given", fix="python finetune/merge.py RUN_ID (see invoke runs)")
        return merge(Layout.from_env(), ref, out_dir=a.out, base=a.base, template=a.template, dtype=a.dtype,
                     n_check=a.check, force=a.force)

    result = guarded(run, as_json=a.json)
    print(json.dumps(result, ensure_ascii=False) if a.json else f"merged into {result['merged']}")
    return 0


def _script_path_fix() -> None:
    """Run as a script, this file's folder would shadow top-level names; put the project root first."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))


if __name__ == "__main__":
    _script_path_fix()
    raise SystemExit(main())
