"""`invoke runs` against hostile and broken run folders: a row with a problem, never a crash or a hang;
strict JSON; a table that stays readable at 80 columns. Light: no torch."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune.rundir import RunDir
from finetune.runs import as_json, discover, render, short_model

ROOT = Path(__file__).resolve().parents[2]
ARGS = "model_name_or_path: /models/Qwen2.5-1.5B-Instruct\ntemplate: qwen\nfinetuning_type: lora\nstage: sft\n"
BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)))


def run_folder(parent: Path, name: str, args: str | None = ARGS, log: list[dict] | None = None, **files) -> Path:
    folder = parent / name
    folder.mkdir(parents=True)
    if args is not None:
        (folder / "training_args.yaml").write_text(args, encoding="utf-8")
    if log is not None:
        (folder / "trainer_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in log), encoding="utf-8")
    for fname, text in files.items():
        (folder / fname.replace("__", ".")).write_text(text, encoding="utf-8")
    past = time.time() - 3600
    for p in folder.iterdir():
        os.utime(p, (past, past))
    return folder


def test_alias_bomb_is_refused_quickly(layout):
    run_folder(layout.outputs_dir, "bomb", args=BOMB)
    t0 = time.perf_counter()
    (row,) = discover(layout)
    assert time.perf_counter() - t0 < 5
    assert any("training_args.yaml" in p and "aliases" in p for p in row.problems), row.problems
    assert row.base_model is None


def test_garbage_fifo_folder_in_place_of_a_file_and_nan_losses(layout):
    out = layout.outputs_dir
    run_folder(out, "garbage", finetune_run__json="\x00\xff{{{", train_results__json="[1, 2")
    fifo = run_folder(out, "fifo", log=[{"current_steps": 1, "total_steps": 4, "loss": 1.0}])
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo / "finetune_run.json")  # opening it would block forever
    else:
        (fifo / "finetune_run.json").mkdir()
    (fifo / "adapter_config.json").mkdir()
    nan = run_folder(out, "nan", log=[{"current_steps": 1, "total_steps": 3, "loss": 2.0},
                                      {"current_steps": 2, "total_steps": 3, "loss": float("nan")},
                                      {"current_steps": 3, "total_steps": 3, "loss": float("inf")}])
    (nan / "train_results.json").write_text('{"train_loss": NaN}', encoding="utf-8")
    notdict = run_folder(out, "list-yaml", args="- just\n- a list\n")
    (notdict / "trainer_log.jsonl").write_bytes(b"\xff\xfe garbage\n" + json.dumps({"current_steps": 1}).encode()
                                                + b"\n{\"current_ste")
    rows = {r.id: r for r in discover(layout)}
    assert set(rows) == {"garbage", "fifo", "nan", "list-yaml"}
    assert any("finetune_run.json" in p for p in rows["garbage"].problems)
    assert any("finetune_run.json: not a regular file" in p for p in rows["fifo"].problems)
    assert rows["fifo"].steps == 1 and rows["fifo"].status == "interrupted"
    assert rows["nan"].status == "finished" and rows["nan"].last_loss == 2.0 and rows["nan"].steps == 3
    assert any("diverged" in p for p in rows["nan"].problems)
    assert any("not a mapping" in p for p in rows["list-yaml"].problems)
    assert rows["list-yaml"].steps == 1  # the bad first line counted, the half-written last one ignored
    assert any("1 unreadable line" in p for p in rows["list-yaml"].problems)
    data = json.loads(as_json(list(rows.values())), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert all(r["problem"] for r in data["runs"])
    for r in data["runs"]:
        assert {"id", "path", "status", "base_model", "template", "steps", "total_steps", "last_loss",
                "artifacts"} <= set(r)
        assert {"adapter", "merged", "checkpoints", "evaluations"} <= set(r["artifacts"])
        assert r["last_loss"] is None or math.isfinite(r["last_loss"])


def test_unreadable_folder_is_a_row_not_a_crash(layout):
    if sys.platform == "win32" or os.geteuid() == 0:
        pytest.skip("permissions cannot make a folder unreadable here (root, or Windows)")
    bad = run_folder(layout.outputs_dir, "locked", log=[{"current_steps": 1}])
    run_folder(layout.outputs_dir, "fine")
    bad.chmod(0)
    try:
        ids = {r.id for r in discover(layout)}
    finally:
        bad.chmod(0o755)
    assert "fine" in ids


def test_log_cost_does_not_grow_with_its_length(layout):
    line = json.dumps({"current_steps": 0, "total_steps": 200_000, "loss": 1.5, "lr": 1e-4}) + "\n"
    folder = run_folder(layout.outputs_dir, "long")
    with (folder / "trainer_log.jsonl").open("w", encoding="utf-8") as fh:
        fh.write(line * 200_000)  # ~15 MB
        fh.write(json.dumps({"current_steps": 200_000, "total_steps": 200_000, "loss": 0.5}) + "\n")
    t0 = time.perf_counter()
    rd = RunDir(folder)
    steps, total, losses = rd.progress()
    assert time.perf_counter() - t0 < 0.5
    assert (steps, total, losses[-1]) == (200_000, 200_000, 0.5)


def test_recorded_arguments_merge_training_args_with_the_board(tmp_path):
    board = ("top.model_path: /models/m\ntop.template: llama3\ntop.finetuning_type: lora\n"
             "train.training_stage: Supervised Fine-Tuning\ntrain.dataset: [a, b]\ntrain.cutoff_len: 512\n")
    only_board = run_folder(tmp_path, "board-only", args=None, llamaboard_config__yaml=board)
    rec = RunDir(only_board).recorded()
    assert (rec.base_model, rec.template, rec.stage, rec.dataset, rec.cutoff_len) == ("/models/m", "llama3", "sft",
                                                                                      "a,b", 512)
    both = run_folder(tmp_path, "both", llamaboard_config__yaml=board)
    assert RunDir(both).recorded().template == "qwen"  # training_args.yaml wins


def test_create_gives_fresh_folders_and_newest_first(layout):
    a = RunDir.create(layout, "x")
    b = RunDir.create(layout, "x")
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir() and a.id.endswith("-x")
    (a.path / "training_args.yaml").write_text(ARGS, encoding="utf-8")
    (b.path / "training_args.yaml").write_text(ARGS, encoding="utf-8")
    os.utime(a.path / "training_args.yaml", (time.time() - 60, time.time() - 60))
    assert [r.id for r in discover(layout, newest_first=True)] == [b.id, a.id]


def test_table_fits_80_columns_without_breaking_words(layout):
    from rich.console import Console

    big = run_folder(layout.outputs_dir, "20260101-120000-a-rather-long-name",
                     args=ARGS.replace("Qwen2.5-1.5B-Instruct", "Meta-Llama-3.1-70B-Instruct-very-long-name"),
                     log=[{"current_steps": 1000, "total_steps": 1000, "loss": 1.23456}],
                     train_results__json='{"train_loss": 1.2}', adapter_config__json="{}",
                     adapter_model__safetensors="x", verify_x__json="{}")
    (big / "verify-held.json").write_text("{}", encoding="utf-8")
    (big / "merged").mkdir()
    (big / "merged" / "config.json").write_text("{}", encoding="utf-8")
    for n in (100, 200, 300):
        (big / f"checkpoint-{n}").mkdir()
    run_folder(layout.outputs_dir, "20260101-130000", args=BOMB)
    buf = io.StringIO()
    render(discover(layout), Console(file=buf, width=80, color_system=None))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "20260101-120000-a-rather-long-name" in text  # ids are never folded
    assert "merged" in text and "ckpt\u00d73" in text and "eval" in text and "finished" in text
    assert short_model("/models/Qwen2.5-1.5B") == "Qwen2.5-1.5B" and short_model("org/name") == "name"
    assert short_model("C:\\models\\m\\") == "m"


def test_cli_json_is_strict_with_a_hostile_run(layout):
    run_folder(layout.outputs_dir, "nan", log=[{"current_steps": 1, "total_steps": 2, "loss": float("nan")}])
    run_folder(layout.outputs_dir, "bomb", args=BOMB)
    env = {**os.environ, "FINETUNE_ROOT": str(layout.root)}
    out = subprocess.run([sys.executable, "-m", "invoke", "runs", "--json"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert {r["id"] for r in data["runs"]} == {"nan", "bomb"}
