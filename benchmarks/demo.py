"""Stage times and match rates of `invoke demo`, in one run.

    python benchmarks/demo.py [--no-webui] [--fresh-model]

Goal (issue 6): >= 80 % exact answers on the trained questions for the fine-tuned model against
about 0 % for the base, the whole demo within 180 s on 2 CPU cores with the venv ready.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-webui", action="store_true", help="skip the Web UI stage")
    parser.add_argument("--fresh-model", action="store_true", help="rebuild the tiny base model (cold run)")
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "invoke", "demo", "--json"]
    cmd += ["--no-webui"] if args.no_webui else []
    cmd += ["--fresh-model"] if args.fresh_model else []
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, encoding="utf-8")
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        return proc.returncode
    result = json.loads(proc.stdout)
    print(f"{'stage':<14}{'seconds':>9}")
    for st in result["stages"]:
        print(f"{st['name']:<14}{st['seconds']:>9.1f}")
    print(f"{'total (stages)':<14}{result['total_seconds']:>9.1f}   wall incl. interpreter start: {wall:.1f} s"
          f" (goal <= 180 s)")
    base, tuned = result["base_exact_match"], result["tuned_exact_match"]
    print(f"exact match on the trained questions: base {base:.0%}, fine-tuned {tuned:.0%} "
          f"(goal >= {result['goal_exact_match']:.0%}); ratio of stage time to goal {result['total_seconds'] / 180:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
