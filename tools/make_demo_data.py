"""Rewrite the demo's raw files (deterministic; the committed copies come from this script).

    python tools/make_demo_data.py [--out dataset/raw]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.demo_data import write_demo_data  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("dataset", "raw"), help="folder for the raw files")
    args = parser.parse_args()
    for path in write_demo_data(args.out):
        print(f"wrote {path}")
    print("next: invoke demo")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
