"""Wall time of the light entry points beside `llamafactory-cli version`, measured in one run.

    python benchmarks/cli_latency.py [--repeat 3]

Prints the median of each and the ratio to `llamafactory-cli version` (which imports torch,
transformers, datasets and gradio; about 10 s on a 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune.env.portable import script_path  # noqa: E402


def timed(cmd: list[str], repeat: int) -> float:
    times = []
    env = {**os.environ, "DISABLE_VERSION_CHECK": "1"}
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (median is shown)")
    args = parser.parse_args()
    py = sys.executable
    cmds = {
        "invoke --list": [py, "-m", "invoke", "--list"],
        "invoke doctor --fast": [py, "-m", "invoke", "doctor", "--fast"],
    }
    lf = script_path("llamafactory-cli")  # the environment's scripts folder (sysconfig), else PATH
    if lf:
        cmds["llamafactory-cli version"] = [lf, "version"]
    results = {name: timed(cmd, args.repeat) for name, cmd in cmds.items()}
    ref = results.get("llamafactory-cli version")
    print(f"{'command':<28}{'median s':>10}{'vs llamafactory-cli version':>30}")
    for name, secs in results.items():
        ratio = f"{secs / ref:.3f}x" if ref else "n/a (llamafactory not installed)"
        print(f"{name:<28}{secs:>10.3f}{ratio:>30}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
