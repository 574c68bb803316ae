"""The legacy scripts' shared main: say what replaces them, parse, call the same function as the
invoke task, print its result (``--json``: strict JSON). ``finetune/merge.py`` and
``finetune/infer_lora_chat.py`` use it; ``run_finetune.py`` maps its flags onto ``TrainFlags``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any


def run_legacy(script: str, task: str, module: str, parser: argparse.ArgumentParser,
               call: Callable[[Any, argparse.Namespace, str], dict], summary: Callable[[argparse.Namespace, dict], str],
               argv: Sequence[str] | None = None) -> int:
    """``call(layout, args, ref)`` with ``ref`` = the RUN argument (or ``--adapter``); exit codes and
    errors as the invoke task's."""
    print(f"{script} is legacy; use `invoke {task} RUN`. Running through {module}.", file=sys.stderr)
    a = parser.parse_args(argv)

    from finetune.cli import guarded
    from finetune.errors import UserError
    from finetune.fileio import dumps_json
    from finetune.layout import Layout

    def run():
        ref = a.run or a.adapter
        if not ref:
            raise UserError("which run? none given", fix=f"python {script} RUN_ID (see invoke runs)")
        return call(Layout.from_env(), a, ref)

    result = guarded(run, as_json=a.json)
    text = dumps_json(result) if a.json else summary(a, result)
    if text:
        print(text)
    return 0
