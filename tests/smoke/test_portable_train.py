"""A multi-process run whose folder holds a space is refused before anything starts (LLaMA-Factory's
torchrun launch would split the path; docs/field-notes.md#torchrun-command), through the real
`invoke train` with LLaMA-Factory installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs_support import kit_root  # noqa: E402

pytestmark = pytest.mark.smoke
ROOT = Path(__file__).resolve().parents[2]


def test_torchrun_run_under_a_path_with_a_space_is_refused_with_the_fix(tmp_path, tiny_model):
    (tmp_path / "First Last").mkdir()
    root = kit_root(tmp_path / "First Last")
    env = {**os.environ, "FINETUNE_ROOT": str(root), "DISABLE_VERSION_CHECK": "1"}
    proc = subprocess.run([sys.executable, "-m", "invoke", "train", "--json", "--model", str(tiny_model),
                           "--template", "qwen", "--dataset", "capitals", "--nproc-per-node", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "splits paths at spaces" in err["error"] and "First Last" in err["error"]
    assert "FINETUNE_OUTPUTS_DIR=" in err["fix"] and "Traceback" not in proc.stderr
    runs = root / "finetune" / "outputs" / "llamafactory"
    assert not runs.exists() or not any(runs.iterdir()), "a run folder was made before the refusal"
