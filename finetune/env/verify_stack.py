"""``python -m finetune.env.verify_stack``: exit 0 only if torch, torchvision, torchaudio,
transformers and llamafactory import together in this Python; else print the diagnosis and fix.

nox runs it right after building a venv, so no venv is left where ``import llamafactory``
half-works.
"""

from __future__ import annotations

import sys

from finetune.env.doctor import FAIL, diagnose, run_probe


def main() -> int:
    checks = diagnose(run_probe())
    bad = [c for c in checks if c.status == FAIL]
    for c in checks:
        print(f"[{c.status}] {c.name}: {c.detail}")
    for c in bad:
        print(f"fix: {c.fix}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
