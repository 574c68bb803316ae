"""The train plan: every problem with the flags in one error before any folder exists; a frozen plan
otherwise; one command line shared by `invoke train` and the legacy shims. Light: no torch."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.errors import UserError
from finetune.llama_factory.plan import FLAG_HELP, TrainFlags, plan_training

ROOT = Path(__file__).resolve().parents[2]
LF = importlib.util.find_spec("llamafactory") is not None


def _invoke(root: Path, *args: str):
    env = {**os.environ, "FINETUNE_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "invoke", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*")] if folder.exists() else []


def _kit(tmp_path: Path) -> tuple[Path, Path]:
    """A project root with a registered dataset and a (config-only) model folder."""
    data = tmp_path / "dataset" / "llamafactory"
    data.mkdir(parents=True)
    (data / "d.jsonl").write_text('{"messages": [{"role": "user", "content": "a"}, '
                                  '{"role": "assistant", "content": "b"}]}\n', encoding="utf-8")
    (data / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.jsonl", "formatting": "sharegpt"}}),
                                            encoding="utf-8")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100}),
                                       encoding="utf-8")
    return tmp_path, model


def test_bad_numbers_are_named_together_and_no_folder_is_made(tmp_path):
    root, model = _kit(tmp_path)
    out = _invoke(root, "train", "--model", str(model), "--template", "qwen", "--dataset", "d",
                  "--lr", "-5", "--batch-size", "0", "--epochs", "-1")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    for flag in ("--lr", "--batch-size", "--epochs"):
        assert flag in out.stderr, out.stderr
    assert "cannot start training" in out.stderr
    assert not _files_under(root / "finetune"), _files_under(root / "finetune")
    out = _invoke(root, "train", "--model", str(model), "--dataset", "d", "--epochs", "1e309", "--cutoff", "0",
                  "--nproc-per-node", "0", "--deepspeed", "z9", "--json")
    assert out.returncode != 0
    err = json.loads(out.stdout)
    text = " ".join(err["details"])
    for flag in ("--epochs", "--cutoff", "--nproc-per-node", "--deepspeed"):
        assert flag in text, text
    assert "inf" in text and not _files_under(root / "finetune")


def test_missing_model_template_and_dataset_are_listed_with_the_numbers(layout):
    with pytest.raises(UserError) as err:
        plan_training(layout, TrainFlags(model=str(layout.root / "none"), template="qwenn", dataset=("nope",),
                                         lr=0.0), free_gib=None)
    text = "\n".join(err.value.details)
    assert "--lr" in text and "base model folder not found" in text and "--dataset" in text
    if LF:
        assert "unknown chat template 'qwenn'" in text
    else:
        assert "LLaMA-Factory is not installed" in text and "nox -s smoke" in err.value.fix
    assert not layout.outputs_dir.exists()


def test_a_good_plan_is_frozen_and_complete(tmp_path, monkeypatch):
    from finetune.layout import Layout

    monkeypatch.setenv("FINETUNE_COMPUTE_TYPE", "fp32")
    root, model = _kit(tmp_path)
    layout = Layout.from_env(root=root, env={})
    flags = TrainFlags.from_kwargs(model=str(model), template="qwen", dataset=["d"], run_name="x", lr=1e-3,
                                   nproc_per_node=2, deepspeed="z2", master_port=29511)
    if importlib.util.find_spec("deepspeed") is None:
        flags = dataclasses.replace(flags, deepspeed="")
    if not LF:
        with pytest.raises(UserError, match="cannot start training: 1 problem$"):
            plan_training(layout, flags, free_gib=None)
        return
    plan = plan_training(layout, flags, free_gib=None)
    assert not plan.run_dir.exists() and plan.run_id.endswith("-x")
    spec = plan.spec
    assert spec.output_dir == str(plan.run_dir) and spec.model_path == str(model.resolve())
    assert spec.dataset_dir == str(layout.data_dir.resolve()) and spec.compute_type == "fp32"
    assert spec.learning_rate == 1e-3 and spec.extra["ddp_backend"] == "gloo"
    assert plan.env["FORCE_TORCHRUN"] == "1" and plan.env["MASTER_PORT"] == "29511"
    assert any("gloo" in n for n in plan.notes)
    if plan.deepspeed:
        assert spec.extra["deepspeed"] == str(plan.run_dir / "ds_z2.json")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.spec.learning_rate = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.env["X"] = "1"  # type: ignore[index]


def test_invoke_train_and_run_finetune_share_every_flag():
    sys.path.insert(0, str(ROOT))
    import run_finetune
    import tasks

    fields = {f.name for f in dataclasses.fields(TrainFlags)}
    task_args = {a.name for a in tasks.ns["train"].get_arguments()} - {"json"}
    assert task_args == fields == set(FLAG_HELP)
    defaults = TrainFlags()
    for arg in tasks.ns["train"].get_arguments():
        if arg.name in fields and arg.name != "dataset":
            assert arg.default == getattr(defaults, arg.name), arg.name
    shim = {a.dest for a in run_finetune.build_parser()._actions} - {"help", "json"}
    assert shim == fields
    # the legacy spellings still parse onto the same fields
    a = vars(run_finetune.build_parser().parse_args(["--model_name_or_path", "m", "--learning_rate", "1e-4",
                                                     "--dataset", "a,b", "--nproc-per-node", "2"]))
    a.pop("json")
    flags = TrainFlags.from_kwargs(**a)
    assert (flags.model, flags.lr, flags.dataset, flags.nproc_per_node) == ("m", 1e-4, ("a", "b"), 2)


@pytest.mark.parametrize("shim,task", [("finetune/merge.py", "merge"), ("finetune/infer_lora_chat.py", "infer")])
def test_legacy_shims_have_every_flag_of_their_task(shim, task):
    sys.path.insert(0, str(ROOT))
    import tasks

    spec = importlib.util.spec_from_file_location("shim_" + task, ROOT / shim)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shim_dests = {a.dest for a in module.build_parser()._actions}
    assert {a.name for a in tasks.ns[task].get_arguments()} <= shim_dests


def test_legacy_run_finetune_reports_the_same_problems(tmp_path):
    root, model = _kit(tmp_path)
    out = subprocess.run([sys.executable, "run_finetune.py", "--model", str(model), "--dataset", "d", "--lr", "-5",
                          "--batch-size", "0", "--epochs", "-1", "--preset", "nope"], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "FINETUNE_ROOT": str(root)}, timeout=120)
    assert out.returncode == 2 and "legacy" in out.stderr
    for flag in ("--lr", "--batch-size", "--epochs", "--preset"):
        assert flag in out.stderr
    assert not _files_under(root / "finetune")
