"""Run discovery and model resolution on hand-made run folders (light: no torch)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune.errors import UserError
from finetune.runs import as_json, discover, read_run

ROOT = Path(__file__).resolve().parents[2]


def make_run(folder: Path, *, args=True, results=False, steps=None, total=10, state=None, adapter=True,
             ckpts=(), template="qwen", base="/models/base", old=True):
    folder.mkdir(parents=True)
    if args:
        (folder / "training_args.yaml").write_text(
            f"model_name_or_path: {base}\ntemplate: {template}\nfinetuning_type: lora\nstage: sft\n"
            "dataset: demo\ncutoff_len: 256\n", encoding="utf-8")
    if steps is not None:
        with (folder / "trainer_log.jsonl").open("w", encoding="utf-8") as fh:
            for s in range(1, steps + 1):
                fh.write(json.dumps({"current_steps": s, "total_steps": total, "loss": 3.0 - s * 0.1}) + "\n")
    if results:
        (folder / "train_results.json").write_text('{"train_loss": 2.5}', encoding="utf-8")
    if adapter:
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}), encoding="utf-8")
        (folder / "adapter_model.safetensors").write_bytes(b"x")
    for c in ckpts:
        (folder / c).mkdir()
    if state is not None:
        (folder / "finetune_run.json").write_text(json.dumps(state), encoding="utf-8")
    if old:  # not touched recently
        past = time.time() - 3600
        for p in folder.iterdir():
            os.utime(p, (past, past))
    return folder


def by_id(runs):
    return {r.id: r for r in runs}


def test_statuses_from_real_layout_files(layout):
    out = layout.outputs_dir
    make_run(out / "r-finished", results=True, steps=10, ckpts=("checkpoint-5", "checkpoint-10"))
    make_run(out / "r-failed", steps=None, adapter=False, state={"status": "failed", "returncode": 1, "pid": 999999})
    make_run(out / "r-killed", steps=4, adapter=False, ckpts=("checkpoint-2",),
             state={"status": "running", "pid": 999999, "pid_create_time": 1.0})
    me = __import__("psutil").Process()
    make_run(out / "r-live", steps=2, adapter=False,
             state={"status": "running", "pid": os.getpid(), "pid_create_time": me.create_time()})
    # started by the Web UI: no state file, a live `llamafactory-cli train <run>/training_args.yaml`
    webui = make_run(out / "r-webui-live", steps=3, adapter=False, old=False)
    make_run(out / "r-webui-gone", steps=3, adapter=False, old=False)  # same, but its trainer is gone
    make_run(out / "r-ctrlc", steps=3, adapter=False, state={"status": "interrupted", "pid": 999999})
    fake_trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "train",
                                     str(webui / "training_args.yaml")])
    try:
        time.sleep(0.3)
        runs = by_id(discover(layout))
    finally:
        fake_trainer.kill()
        fake_trainer.wait()
    assert runs["r-finished"].status == "finished"
    assert runs["r-finished"].artifacts["checkpoints"] == ["checkpoint-5", "checkpoint-10"]
    assert runs["r-finished"].artifacts["adapter"] and runs["r-finished"].steps == 10
    assert runs["r-finished"].last_loss == pytest.approx(2.0) and runs["r-finished"].min_loss == pytest.approx(2.0)
    assert runs["r-failed"].status == "failed"
    assert runs["r-killed"].status == "interrupted"
    assert runs["r-live"].status == "running"
    assert runs["r-webui-live"].status == "running"
    assert runs["r-webui-gone"].status == "interrupted"
    assert runs["r-ctrlc"].status == "interrupted"


def test_stale_run_with_error_in_log_is_failed(tmp_path):
    run = make_run(tmp_path / "r", steps=2, adapter=False)
    (run / "running_log.txt").write_text("step 1\nValueError: Cannot find valid samples\n", encoding="utf-8")
    past = time.time() - 3600
    os.utime(run / "running_log.txt", (past, past))
    assert read_run(run).status == "failed"


def test_corrupt_folders_are_listed_with_the_reason(layout):
    out = layout.outputs_dir
    bad = make_run(out / "r-bad-yaml", args=False, steps=2)
    (bad / "training_args.yaml").write_text("model: [unclosed\n  x: 1\n", encoding="utf-8")
    half = make_run(out / "r-half-adapter", results=True)
    (half / "adapter_model.safetensors").unlink()
    js = make_run(out / "r-bad-json", results=True)
    (js / "trainer_log.jsonl").write_text('{"current_steps": 1}\ngarbage\n{"current_steps": 2}\n', encoding="utf-8")
    st = make_run(out / "r-bad-state", results=True)  # no trainer log: the state file is read
    (st / "trainer_state.json").write_text("{not json", encoding="utf-8")
    runs = by_id(discover(layout))
    assert any("training_args.yaml: not valid YAML" in p and "(line 2)" in p for p in runs["r-bad-yaml"].problems)
    assert runs["r-half-adapter"].artifacts["adapter"] is None
    assert any("without adapter weights" in p for p in runs["r-half-adapter"].problems)
    assert any("trainer_state.json: not valid JSON" in p for p in runs["r-bad-state"].problems)
    assert any("1 unreadable line" in p for p in runs["r-bad-json"].problems)


def test_saves_tree_and_given_paths_and_json_contract(layout, tmp_path):
    make_run(layout.root / "saves" / "Custom" / "lora" / "train_1", results=True, steps=3)
    elsewhere = tmp_path / "elsewhere"
    make_run(elsewhere / "my-run", results=True, steps=3)
    runs = discover(layout, [elsewhere])
    ids = {r.id for r in runs}
    assert "saves/Custom/lora/train_1" in ids and "my-run" in ids
    data = json.loads(as_json(runs))
    for run in data["runs"]:
        for key in ("id", "path", "status", "base_model", "template", "steps", "total_steps", "last_loss",
                    "artifacts"):
            assert key in run
        assert {"adapter", "merged", "checkpoints"} <= set(run["artifacts"])
        assert run["base_model"] == "/models/base" and run["template"] == "qwen"
    with pytest.raises(UserError, match="no such folder"):
        discover(layout, [tmp_path / "missing"])


def test_resolve_run_checkpoint_and_errors(layout, tmp_path):
    from finetune.inference.resolve import resolve

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}", encoding="utf-8")
    run = make_run(layout.outputs_dir / "20250101-000000-ok", results=True, steps=3, base=str(base),
                   ckpts=("checkpoint-2",))
    (run / "checkpoint-2" / "adapter_config.json").write_text("{}", encoding="utf-8")
    (run / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"x")
    ref = resolve(layout, "20250101-000000-ok")
    assert (ref.kind, ref.base, ref.adapter, ref.template) == ("run", str(base), str(run), "qwen")
    ck = resolve(layout, str(run / "checkpoint-2"))
    assert ck.kind == "checkpoint" and ck.template == "qwen" and ck.base == str(base)

    # adapter missing: says what the folder holds and the nearest runs
    noad = make_run(layout.outputs_dir / "20250101-000000-noadapter", adapter=False, steps=2,
                    ckpts=("checkpoint-1",), base=str(base))
    (noad / "checkpoint-1" / "adapter_config.json").write_text("{}", encoding="utf-8")
    (noad / "checkpoint-1" / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(UserError) as err:
        resolve(layout, str(noad))
    text = err.value.render()
    assert "adapter not found" in text and "training_args.yaml" in text and "checkpoint-1" in text
    assert "nearest runs" in text

    # base model gone
    gone = make_run(layout.outputs_dir / "20250101-000000-gone", results=True, base=str(tmp_path / "moved"))
    with pytest.raises(UserError) as err:
        resolve(layout, str(gone))
    assert "base model not found" in err.value.message and "--base" in err.value.fix
    assert resolve(layout, str(gone), base=str(base)).base == str(base)

    # no base recorded anywhere
    nob = tmp_path / "bare-adapter"
    nob.mkdir()
    (nob / "adapter_config.json").write_text("{}", encoding="utf-8")
    (nob / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(UserError) as err:
        resolve(layout, str(nob), template="qwen")
    assert "base model not given" in err.value.message and "--base" in err.value.fix
    with pytest.raises(UserError, match="no chat template"):
        resolve(layout, str(nob), base=str(base))

    with pytest.raises(UserError, match="no run or folder"):
        resolve(layout, "20250101-nothing")


def test_resolve_unknown_template(layout, tmp_path):
    from finetune.inference.resolve import resolve
    from finetune.llama_factory.args import known_templates

    if not known_templates():
        pytest.skip("LLaMA-Factory not installed: template names unknown")
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}", encoding="utf-8")
    run = make_run(layout.outputs_dir / "r", results=True, base=str(base), template="qwenn")
    with pytest.raises(UserError) as err:
        resolve(layout, str(run))
    assert "unknown chat template 'qwenn'" in err.value.message and "qwen" in " ".join(err.value.details)


def _invoke(args, root):
    env = {**os.environ, "FINETUNE_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "invoke", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


def test_cli_runs_and_clear_errors(layout, tmp_path):
    make_run(layout.outputs_dir / "20250101-000000-a", results=True, steps=3)
    out = _invoke(["runs", "--json"], layout.root)
    assert out.returncode == 0, out.stderr
    assert [r["id"] for r in json.loads(out.stdout)["runs"]] == ["20250101-000000-a"]
    out = _invoke(["runs"], layout.root)
    assert out.returncode == 0 and "20250101-000000-a" in out.stdout and "finished" in out.stdout
    out = _invoke(["runs", "--path", str(tmp_path / "missing")], layout.root)
    assert out.returncode != 0 and "no such folder" in out.stderr and "Traceback" not in out.stderr
    out = _invoke(["infer", "20250101-000000-zz", "--prompt", "hi"], layout.root)
    assert out.returncode == 2 and "no run or folder named" in out.stderr and "Traceback" not in out.stderr
    assert "20250101-000000-a" in out.stderr  # nearest runs
    out = _invoke(["train", "--model", str(tmp_path / "none"), "--dataset", "x"], layout.root)
    assert out.returncode == 2 and "cannot start training" in out.stderr and "Traceback" not in out.stderr
    out = _invoke(["train", "--resume", "20250101-000000-a"], layout.root)
    assert out.returncode == 2 and "already finished" in out.stderr


def test_ui_runs_started_without_load_arguments_are_found(layout):
    """The Web UI's save dir is our outputs folder: <model>/<type>/<output dir> below it."""
    make_run(layout.outputs_dir / "20260101-000000-a", results=True, steps=3)
    make_run(layout.outputs_dir / "Custom" / "lora" / "train_2026-01-01-00-00-00", results=True, steps=3)
    runs = by_id(discover(layout))
    assert runs["20260101-000000-a"].status == "finished"
    assert runs["Custom/lora/train_2026-01-01-00-00-00"].status == "finished"
    assert "Custom" not in runs and "Custom/lora" not in runs


def test_resume_skips_a_checkpoint_cut_off_mid_save(tmp_path):
    from finetune.rundir import RunDir

    def latest_checkpoint(folder):
        return RunDir(folder).latest_checkpoint()

    for n, complete in ((10, True), (20, True), (30, False)):
        ck = tmp_path / f"checkpoint-{n}"
        ck.mkdir()
        (ck / "adapter_model.safetensors").write_bytes(b"x")
        if complete:
            (ck / "trainer_state.json").write_text("{}", encoding="utf-8")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-20"
    assert latest_checkpoint(tmp_path / "missing") is None
