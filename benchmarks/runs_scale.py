"""How `invoke runs` scales: with log length (150 runs, 20k-line logs vs 10-line logs; the target is a
ratio of at most 2) and with the number of runs (2000 runs of 10k-line logs, in seconds).

    python benchmarks/runs_scale.py [--runs 150] [--long 20000] [--many 2000] [--keep]

Run folders are made in a temporary project root, each like a real one (training_args.yaml,
llamaboard_config.yaml, finetune_run.json, trainer_log.jsonl, train_results.json, an adapter, two
checkpoints); identical logs are hard links of one file (no gigabytes on disk). Times are the
median of 3 cold listings (discover + strict JSON, the parsed-file cache emptied first), in this
process; the large listing is also timed a second time (warm: unchanged files are not parsed again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune import rundir  # noqa: E402
from finetune.layout import Layout  # noqa: E402
from finetune.runs import as_json, discover  # noqa: E402

ARGS = ("model_name_or_path: /models/Qwen2.5-1.5B-Instruct\ntemplate: qwen\nfinetuning_type: lora\nstage: sft\n"
        "dataset: demo\ndataset_dir: /data\ncutoff_len: 1024\nlearning_rate: 5.0e-05\noutput_dir: /out\n")
BOARD = "".join(f"train.key_{i}: value {i}\n" for i in range(100)) + "top.template: qwen\n"


def make_log(path: Path, lines: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for step in range(1, lines + 1):
            fh.write(json.dumps({"current_steps": step, "total_steps": lines, "loss": 2.0 - step / (lines * 2),
                                 "lr": 5e-5, "epoch": step / lines, "percentage": 100 * step / lines,
                                 "elapsed_time": "0:01:00", "remaining_time": "0:00:00"}) + "\n")
    return path


def make_runs(root: Path, n: int, log: Path) -> Layout:
    layout = Layout.from_env(root=root, env={})
    for i in range(n):
        run = layout.run_dir(f"20250101-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-r{i}")
        run.mkdir(parents=True)
        (run / "training_args.yaml").write_text(ARGS, encoding="utf-8")
        (run / "llamaboard_config.yaml").write_text(BOARD, encoding="utf-8")
        (run / "finetune_run.json").write_text(json.dumps({"status": "finished", "pid": 999999, "returncode": 0,
                                                          "started_at": "2025-01-01T00:00:00"}), encoding="utf-8")
        (run / "train_results.json").write_text('{"train_loss": 1.5}', encoding="utf-8")
        (run / "adapter_config.json").write_text('{"base_model_name_or_path": "/models/q"}', encoding="utf-8")
        (run / "adapter_model.safetensors").write_bytes(b"x")
        for ck in (1, 2):
            (run / f"checkpoint-{ck}").mkdir()
            (run / f"checkpoint-{ck}" / "trainer_state.json").write_text("{}", encoding="utf-8")
        try:
            os.link(log, run / "trainer_log.jsonl")
        except OSError:
            shutil.copy(log, run / "trainer_log.jsonl")
    return layout


def listing_seconds(layout: Layout, repeat: int = 3, warm: bool = False) -> float:
    """Median seconds of ``repeat`` listings; cold (the parsed-file cache emptied first) unless ``warm``."""
    times = []
    for _ in range(repeat):
        if not warm:
            rundir._PARSED.clear()
        t0 = time.perf_counter()
        runs = discover(layout)
        as_json(runs)
        times.append(time.perf_counter() - t0)
    assert all(r.status == "finished" for r in runs), {r.status for r in runs}
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=150)
    ap.add_argument("--long", type=int, default=20_000, help="lines in a long log")
    ap.add_argument("--many", type=int, default=2000, help="runs in the large listing (0 skips it)")
    ap.add_argument("--many-lines", type=int, default=10_000, help="log lines of each run in the large listing")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    a = ap.parse_args()
    top = Path(tempfile.mkdtemp(prefix="runs-scale-"))
    try:
        logs = top / "logs"
        logs.mkdir()
        short_log, long_log = make_log(logs / "short.jsonl", 10), make_log(logs / "long.jsonl", a.long)
        short = listing_seconds(make_runs(top / "short", a.runs, short_log))
        long = listing_seconds(make_runs(top / "long", a.runs, long_log))
        print(f"{a.runs} runs, 10-line logs:       {short:.3f} s")
        print(f"{a.runs} runs, {a.long}-line logs: {long:.3f} s  ({long_log.stat().st_size / 1e6:.1f} MB each)")
        print(f"ratio long / short: {long / short:.2f} (target <= 2)")
        if a.many:
            many_log = make_log(logs / "many.jsonl", a.many_lines)
            many = make_runs(top / "many", a.many, many_log)
            cold = listing_seconds(many, repeat=1)
            warm = listing_seconds(many, repeat=1, warm=True)
            print(f"{a.many} runs, {a.many_lines}-line logs: {cold:.2f} s cold ({1000 * cold / a.many:.2f} ms a run), "
                  f"{warm:.2f} s listed again (parsed files cached by mtime)")
    finally:
        if a.keep:
            print(f"kept: {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
