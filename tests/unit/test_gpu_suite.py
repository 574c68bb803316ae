"""benchmarks/gpu_suite.sh: its stage limits fit the 8 minutes a lent GPU gives, and without a GPU it says
so and measures nothing (it never pretends)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"


def test_stage_limits_fit_in_eight_minutes():
    limits = [int(n) for n in re.findall(r"^\s*stage \w+ (\d+) ", SUITE.read_text(encoding="utf-8"), re.M)]
    assert len(limits) >= 4 and sum(limits) <= 8 * 60 - 15, limits
    text = SUITE.read_text(encoding="utf-8")
    assert "tests/gpu" in text and "gpu_throughput.py" in text and "--no-index" in text


@pytest.mark.skipif(os.name == "nt" or shutil.which("bash") is None or shutil.which("nvidia-smi") is not None,
                    reason="needs a POSIX bash and a machine without an NVIDIA GPU")
def test_without_a_gpu_nothing_is_measured(tmp_path):
    proc = subprocess.run(["bash", str(SUITE)], env={**os.environ, "OUT": str(tmp_path)}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "gpu_suite.json").read_text(encoding="utf-8"))
    assert summary["measured"] is False and summary["gpu"] is None
