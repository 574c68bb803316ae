#!/usr/bin/env python
"""Legacy entry point, kept for compatibility: trains headless exactly like ``invoke train``.

    python run_finetune.py --model PATH --template qwen --dataset NAME [--epochs 3 ...]
    python run_finetune.py --resume RUN_ID

Every flag of ``invoke train`` is here (built from the same
:class:`~finetune.llama_factory.plan.TrainFlags` and help), plus the old snake_case spellings
(``--model_name_or_path``, ``--learning_rate`` ...). Both call
:func:`finetune.llama_factory.train.run_training`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The old spellings this script accepted before `invoke train` existed.
LEGACY_ALIASES = {
    "model": ["--model_name_or_path"], "run_name": ["--run_name"], "epochs": ["--num_train_epochs"],
    "lr": ["--learning_rate"], "batch_size": ["--per_device_train_batch_size"], "cutoff": ["--cutoff_len"],
    "lora_rank": ["--lora_rank"], "max_samples": ["--max_samples"], "save_steps": ["--save_steps"],
}


def build_parser() -> argparse.ArgumentParser:
    from finetune.llama_factory.plan import FLAG_HELP, TrainFlags

    p = argparse.ArgumentParser(description="Train headless with the arguments the Web UI writes "
                                            "(legacy; use invoke train, same flags).")
    for f in dataclasses.fields(TrainFlags):
        names = ["--" + f.name.replace("_", "-"), *LEGACY_ALIASES.get(f.name, [])]
        if f.name == "dataset":
            p.add_argument(*names, dest=f.name, action="append", default=[], help=FLAG_HELP[f.name])
            continue
        kind = type(f.default)
        p.add_argument(*names, dest=f.name, type=kind, default=f.default, help=FLAG_HELP[f.name])
    p.add_argument("--json", action="store_true", help="print the result as JSON (no progress bar)")
    return p


def main(argv: list[str] | None = None) -> int:
    print("run_finetune.py is legacy; use `invoke train` (same flags). Training through finetune.llama_factory.train.",
          file=sys.stderr)
    a = vars(build_parser().parse_args(argv))
    as_json = a.pop("json")

    from finetune.cli import guarded
    from finetune.layout import Layout
    from finetune.llama_factory.plan import TrainFlags
    from finetune.llama_factory.train import report, run_training

    flags = TrainFlags.from_kwargs(**a)
    report(guarded(lambda: run_training(Layout.from_env(), flags, progress=not as_json), as_json=as_json), as_json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
