"""What the patched Web UI decides without LLaMA-Factory: where Start trains, which runs the
Checkpoint path lists, where Export and Evaluate write, the Runs tab's table and curves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from finetune.llama_factory import runs_tab


def _run(layout, run_id: str, base: Path, *, finished: bool = True, ckpts: tuple[int, ...] = (),
         adapter: bool = True, losses: tuple[float, ...] = (2.0, 1.0)) -> Path:
    folder = layout.run_dir(run_id)
    folder.mkdir(parents=True)
    (folder / "training_args.yaml").write_text(yaml.safe_dump({"model_name_or_path": str(base), "template": "qwen",
                                                               "finetuning_type": "lora", "stage": "sft",
                                                               "dataset": "facts"}), encoding="utf-8")
    with (folder / "trainer_log.jsonl").open("w", encoding="utf-8") as fh:
        for i, loss in enumerate(losses, 1):
            fh.write(json.dumps({"current_steps": i, "total_steps": len(losses), "loss": loss}) + "\n")
    if adapter:
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}),
                                                    encoding="utf-8")
        (folder / "adapter_model.safetensors").write_bytes(b"x")
    for step in ckpts:
        ck = folder / f"checkpoint-{step}"
        ck.mkdir()
        (ck / "adapter_config.json").write_text("{}", encoding="utf-8")
        (ck / "adapter_model.safetensors").write_bytes(b"x")
        (ck / "trainer_state.json").write_text("{}", encoding="utf-8")
    if finished:
        (folder / "train_results.json").write_text(json.dumps({"train_loss": losses[-1]}), encoding="utf-8")
    else:  # stopped by Ctrl-C, recorded as such
        (folder / "finetune_run.json").write_text(json.dumps({"status": "interrupted", "pid": 0}), encoding="utf-8")
    return folder


def test_checkpoint_choices_list_runs_of_the_selected_model_newest_first(layout, tmp_path):
    base, other = tmp_path / "base", tmp_path / "other"
    base.mkdir()
    other.mkdir()
    old = _run(layout, "20260101-100000", base)
    new = _run(layout, "20260102-100000", base, ckpts=(50, 100))
    _run(layout, "20260103-100000", other)
    choices = runs_tab.checkpoint_choices(layout, str(base), "lora")
    values = [v for _, v in choices]
    assert values == [str(new), str(new / "checkpoint-100"), str(new / "checkpoint-50"), str(old)]
    assert choices[0][0].startswith("20260102-100000 (finished")
    assert all(os.sep in v for v in values)  # LlamaBoard uses a path with the separator as given
    assert runs_tab.checkpoint_choices(layout, None) == []
    assert runs_tab.checkpoint_choices(layout, str(base), "full") == []  # no full models among them


def test_start_is_a_new_run_unless_an_interrupted_one_is_picked(layout, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    fresh = str(layout.run_dir("20260105-100000"))
    plan = runs_tab.plan_output_dir(layout, fresh)
    assert plan.output_dir == fresh and not plan.resume and not Path(fresh).exists()

    done = _run(layout, "20260101-100000", base)
    plan = runs_tab.plan_output_dir(layout, str(done))
    assert plan.output_dir != str(done) and not Path(plan.output_dir).exists()
    assert "finished" in plan.note and Path(plan.output_dir).parent == layout.outputs_dir

    cut = _run(layout, "20260102-100000", base, finished=False, adapter=False, ckpts=(10,))
    plan = runs_tab.plan_output_dir(layout, str(cut))
    assert plan.output_dir == str(cut) and plan.resume and "checkpoint-10" in plan.note
    labels = dict((v, k) for k, v in runs_tab.output_dir_choices(layout, str(base), fresh))
    assert labels[fresh] == fresh and labels[str(cut)].startswith("continue 20260102-100000")
    assert str(done) not in labels

    failed = _run(layout, "20260103-100000", base, finished=False, adapter=False)  # no checkpoint
    assert runs_tab.plan_output_dir(layout, str(failed)).output_dir != str(failed)
    assert runs_tab.plan_output_dir(layout, "my-name").output_dir == str(layout.outputs_dir / "my-name")


def test_export_and_eval_dirs_go_inside_the_run(layout, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    run = _run(layout, "20260101-100000", base, ckpts=(5,))
    assert runs_tab.default_export_dir(layout, [str(run)]) == str(run / "merged")
    assert runs_tab.default_export_dir(layout, [str(run / "checkpoint-5")]) == str(run / "merged-checkpoint-5")
    assert runs_tab.default_export_dir(layout, []) is None
    assert runs_tab.default_export_dir(layout, [str(tmp_path / "elsewhere")]) is None
    assert runs_tab.inside_run(layout, [str(run)], "my-export") == str(run / "my-export")
    assert runs_tab.inside_run(layout, [str(run / "checkpoint-5")], "eval_x") == str(run / "eval_x")
    assert runs_tab.inside_run(layout, [str(run)], str(tmp_path / "abs")) is None  # a path stays as given
    assert runs_tab.inside_run(layout, [], "name") is None


def test_runs_table_and_loss_points(layout, tmp_path):
    base = tmp_path / "tiny-base"
    base.mkdir()
    run = _run(layout, "20260101-100000", base, losses=(3.0, 2.0, 1.5))
    (run / "merged").mkdir()
    (run / "merged" / "config.json").write_text("{}", encoding="utf-8")
    (run / "verify-facts.json").write_text("{}", encoding="utf-8")
    for name in ("eval_a", "eval_b", "notes"):  # Evaluate & Predict outputs; a folder of the user's
        (run / name).mkdir()
    for name in ("eval_a", "eval_b"):
        (run / name / "all_results.json").write_text("{}", encoding="utf-8")
    rows = runs_tab.runs_table(layout)
    assert len(rows) == 1 and len(rows[0]) == len(runs_tab.TABLE_COLUMNS)
    row = dict(zip(runs_tab.TABLE_COLUMNS, rows[0], strict=True))
    assert row["run"] == "20260101-100000" and row["status"] == "finished" and row["base"] == "tiny-base"
    assert row["template"] == "qwen" and row["loss"] == "1.5"
    assert row["artifacts"] == "adapter merged eval\u00d71 pred\u00d72", row["artifacts"]
    from finetune.rundir import RunDir

    assert [p.name for p in RunDir.of(layout, run.name).predictions()] == ["eval_a", "eval_b"]
    points = runs_tab.loss_points(layout, ["20260101-100000", "no-such-run"])
    assert [(p["step"], p["loss"]) for p in points] == [(1, 3.0), (2, 2.0), (3, 1.5)]


def test_verify_markdown_shows_both_scores():
    report = {"run": "r1", "data": "/d/facts.jsonl", "samples": 16,
              "base": {"exact_match": 0.0, "normalised_match": 0.0625, "loss": 3.2},
              "tuned": {"exact_match": 1.0, "normalised_match": 1.0, "loss": 0.01},
              "examples": [{"prompt": "Where?", "reference": "Rome.", "base": "Paris.", "tuned": "Rome."}]}
    text = runs_tab.verify_markdown(report)
    assert "| exact match | 0% | 100% |" in text and "| Where? | Rome. | Paris. | Rome. |" in text


def test_a_run_shorter_than_logging_steps_still_has_a_point(layout, tmp_path):
    """LLaMA-Factory logs no loss line when a run has fewer steps than logging_steps, only its summary:
    the curve shows the run's mean loss (train_results.json) at its last step instead of nothing."""
    base = tmp_path / "base"
    base.mkdir()
    run = _run(layout, "20260101-100000", base, losses=(2.5,))
    (run / "trainer_log.jsonl").write_text(json.dumps({"current_steps": 3, "total_steps": 3, "train_runtime": 1.0})
                                           + "\n", encoding="utf-8")
    assert runs_tab.loss_points(layout, ["20260101-100000"]) == [{"step": 3, "loss": 2.5, "run": "20260101-100000"}]


def test_a_failed_run_says_why_in_the_note(layout, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    run = _run(layout, "20260101-100000", base, finished=False, adapter=False, losses=())
    log = tmp_path / "train.log"
    log.write_text("Traceback (most recent call last):\n  ...\nRuntimeError: [enforce fail at alloc_cpu.cpp:127] "
                   "err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes.\n",
                   encoding="utf-8")
    (run / "finetune_run.json").write_text(json.dumps({"status": "failed", "pid": 0, "log": str(log)}),
                                           encoding="utf-8")
    [row] = runs_tab.runs_table(layout)
    note = dict(zip(runs_tab.TABLE_COLUMNS, row, strict=True))["note"]
    assert note.startswith("out of memory: lower Batch size and/or Cutoff length") and "alloc_cpu" in note
