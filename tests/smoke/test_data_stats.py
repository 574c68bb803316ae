"""Token statistics and the --cutoff warning with a real tokenizer (the tiny model's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.smoke
pytest.importorskip("transformers")

from finetune.data.check import check_files  # noqa: E402
from finetune.data.stats import token_stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "dataset" / "llamafactory" / "sample_zh_en.jsonl"


def test_token_stats_on_sample(tiny_model, tmp_path):
    first = token_stats(SAMPLE, tiny_model, cutoff=100_000)
    assert first["truncated"] == 0
    res = token_stats(SAMPLE, tiny_model, cutoff=first["p50"], histogram=tmp_path / "h.png")
    n = sum(1 for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip())
    assert res["conversations"] == n and res["skipped"] == 0
    assert 0 < res["p50"] <= res["p90"] <= res["p99"] <= res["max"]
    assert 0 < res["truncated"] < n  # a cutoff at the median cuts some, not all
    assert res["suggested_cutoff"] >= res["p99"]
    assert Path(res["histogram"]).stat().st_size > 1000


def test_check_with_tokenizer_flags_long_lines(tiny_model, tmp_path):
    path = tmp_path / "long.jsonl"
    short = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    long = {"messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]}
    path.write_text(json.dumps(short) + "\n" + json.dumps(long) + "\n", encoding="utf-8")
    report = check_files([path], cutoff=100, tokenizer=tiny_model)
    long_hits = [p for p in report.files[0].problems if p.code == "longer-than-cutoff"]
    assert [p.line for p in long_hits] == [2] and not report.has_errors


def test_stats_task_json(tiny_model):
    out = subprocess.run([sys.executable, "-m", "invoke", "data.stats", str(SAMPLE), str(tiny_model), "--cutoff",
                          "64", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["cutoff"] == 64
