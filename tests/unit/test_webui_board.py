"""The pre-fill files: user_config.yaml, the saved argument set, output-dir building per OS."""

from __future__ import annotations

import json
import ntpath
import os
import posixpath
from pathlib import PurePosixPath, PureWindowsPath

import pytest
import yaml

from finetune.errors import UserError
from finetune.llama_factory import board


def _register(layout, entries: dict) -> None:
    layout.ensure(layout.data_dir)
    layout.dataset_info.write_text(json.dumps(entries), encoding="utf-8")


SHAREGPT = {"file_name": "a.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant", "system_tag": "system"}}


def test_output_dir_uses_the_windows_separator():
    value = board.run_output_dir(PureWindowsPath(r"C:\Users\me\kit\finetune\outputs\llamafactory"),
                                 "20250101-120000-webui", path_cls=PureWindowsPath)
    assert value == r"C:\Users\me\kit\finetune\outputs\llamafactory\20250101-120000-webui"
    assert ntpath.sep in value and "/" not in value  # LlamaBoard then uses it as a path, as given


def test_output_dir_from_a_forward_slash_windows_path_is_normalised():
    value = board.run_output_dir("C:/kit/finetune/outputs/llamafactory", "r1", path_cls=PureWindowsPath)
    assert value == r"C:\kit\finetune\outputs\llamafactory\r1"


def test_output_dir_posix():
    value = board.run_output_dir("/srv/kit/finetune/outputs/llamafactory", "r1", path_cls=PurePosixPath)
    assert value == "/srv/kit/finetune/outputs/llamafactory/r1" and posixpath.sep in value


def test_registered_datasets_lists_sft_ones_in_order(layout):
    assert board.registered_datasets(layout) == []
    _register(layout, {"b": SHAREGPT, "pairs": {**SHAREGPT, "ranking": True}, "a": SHAREGPT})
    assert board.registered_datasets(layout) == ["b", "a"]


def test_broken_registry_is_a_user_error(layout):
    layout.ensure(layout.data_dir)
    layout.dataset_info.write_text("{nope", encoding="utf-8")
    with pytest.raises(UserError) as info:
        board.registered_datasets(layout)
    assert str(layout.dataset_info) in info.value.where and "data.register" in info.value.fix


def test_prepare_writes_user_config_and_argument_set(layout, tmp_path):
    model = tmp_path / "my-model"
    model.mkdir()
    _register(layout, {"mine": SHAREGPT})
    layout.ensure(layout.webui_cache_dir)
    # What the user had before: language and another model are kept.
    (layout.webui_cache_dir / "user_config.yaml").write_text(
        yaml.safe_dump({"lang": "zh", "hub_name": "huggingface", "last_model": "Qwen2-7B",
                        "path_dict": {"Qwen2-7B": "/models/q"}, "cache_dir": None}), encoding="utf-8")
    files = board.prepare(layout, "r1", model=model, template="qwen", overrides={"train.max_samples": "8"})

    cfg = yaml.safe_load(files.user_config.read_text(encoding="utf-8"))
    assert cfg["lang"] == "zh" and cfg["path_dict"]["Qwen2-7B"] == "/models/q"
    assert cfg["last_model"] == "Custom" and cfg["path_dict"]["Custom"] == str(model.resolve())
    assert files.user_config == layout.webui_cache_dir / "user_config.yaml"

    assert files.arg_set == layout.webui_config_dir / "finetune-defaults.yaml"
    assert files.arg_set_name == "finetune-defaults.yaml"
    values = yaml.safe_load(files.arg_set.read_text(encoding="utf-8"))
    assert values["train.dataset_dir"] == str(layout.data_dir)
    assert values["train.dataset"] == ["mine"]
    assert values["train.output_dir"] == str(layout.run_dir("r1")) == files.output_dir
    assert values["top.template"] == "qwen" and values["top.model_path"] == str(model.resolve())
    assert values["train.max_samples"] == "8"
    assert "top.model_name" not in values  # it would reset model path and template when loaded
    assert not layout.run_dir("r1").exists()  # LlamaBoard warns about an existing output dir


def test_prepare_without_model_leaves_model_fields_alone(layout):
    files = board.prepare(layout, "r2")
    values = yaml.safe_load(files.arg_set.read_text(encoding="utf-8"))
    assert "top.model_path" not in values and "top.template" not in values
    assert values["train.dataset"] == []
    cfg = yaml.safe_load(files.user_config.read_text(encoding="utf-8"))
    assert cfg["last_model"] is None and cfg["path_dict"] == {}


def test_prepare_rejects_a_missing_model(layout, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        board.prepare(layout, "r3", model=tmp_path / "nope")


def test_broken_user_config_is_replaced_not_fatal(layout):
    layout.ensure(layout.webui_cache_dir)
    (layout.webui_cache_dir / "user_config.yaml").write_text(": : [", encoding="utf-8")
    files = board.prepare(layout, "r4")
    assert yaml.safe_load(files.user_config.read_text(encoding="utf-8"))["path_dict"] == {}


def test_template_is_remembered_per_model(layout, tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    board.prepare(layout, "r1", model=model, template="qwen")
    files = board.prepare(layout, "r2", model=model)  # relaunch without --template
    assert files.template == "qwen"
    assert yaml.safe_load(files.arg_set.read_text(encoding="utf-8"))["top.template"] == "qwen"
    assert board.prepare(layout, "r3", model=other).template is None  # never another model's
    files = board.prepare(layout, "r4")  # no --model at all: the last model and its template
    assert files.model == str(other.resolve()) and files.template is None
    board.prepare(layout, "r5", model=model)
    assert board.prepare(layout, "r6").template == "qwen"


def test_datasets_default_to_the_latest_and_flags_are_checked(layout):
    import os
    import time

    _register(layout, {"old": {**SHAREGPT, "file_name": "old.jsonl"}, "new": {**SHAREGPT, "file_name": "new.jsonl"},
                       "pairs": {**SHAREGPT, "file_name": "p.jsonl", "ranking": True}})
    for i, name in enumerate(("new.jsonl", "old.jsonl")):  # old.jsonl written last
        (layout.data_dir / name).write_text("{}\n", encoding="utf-8")
        os.utime(layout.data_dir / name, (time.time() + i, time.time() + i))
    assert board.choose_datasets(layout, None) == ["old"]
    assert board.choose_datasets(layout, ["new", "old,new"]) == ["new", "old"]
    with pytest.raises(UserError) as info:
        board.choose_datasets(layout, ["nope"])
    assert "nope" in info.value.message and "data.register" in info.value.fix and "old" in info.value.fix


def test_demo_data_gets_the_demo_hyper_parameters(layout, tmp_path):
    from finetune import demo

    model = tmp_path / "m"
    model.mkdir()
    _register(layout, {demo.DEMO_DATASET: SHAREGPT})
    values = board.prepare(layout, "r1", model=model, template="qwen").values
    assert float(values["train.num_train_epochs"]) == demo.TRAIN["epochs"]
    assert float(values["train.learning_rate"]) == demo.TRAIN["lr"]
    assert values["train.batch_size"] == demo.TRAIN["batch_size"] and values["train.compute_type"] in ("fp32", "bf16")
    _register(layout, {"mine": SHAREGPT})
    values = board.prepare(layout, "r2", model=model, template="qwen").values
    assert values["train.num_train_epochs"] == "3.0"  # LlamaBoard's defaults for other data
    assert json.loads(values["train.extra_args"])["preprocessing_num_workers"] <= max(1, (os.cpu_count() or 1) - 1)


def test_write_atomic_leaves_no_temp_files(tmp_path):
    target = tmp_path / "x.yaml"
    board.write_atomic(target, "a: 1\n")
    board.write_atomic(target, "a: 2\n")
    assert target.read_text(encoding="utf-8") == "a: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.yaml"]


@pytest.mark.parametrize("version,env,ok", [("0.9.5", {}, True), ("0.9.6", {}, False), ("0.10.0", {}, False),
                                            ("0.9.5", {"FINETUNE_WEBUI_NO_PATCH": "1"}, False)])
def test_internals_only_on_verified_versions(version, env, ok):
    assert board.internals_usable(version, env) is ok


def test_prepare_stays_light(tmp_path):
    """Writing the pre-fill imports neither torch nor LLaMA-Factory (the launcher's start-up cost)."""
    import subprocess
    import sys

    code = ("import sys\nfrom finetune.layout import Layout\nfrom finetune.llama_factory import board\n"
            f"board.prepare(Layout.from_env(root={str(tmp_path)!r}, env={{}}), 'r1', template='qwen')\n"
            "print([m for m in ('torch', 'transformers', 'llamafactory', 'gradio') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("env,nvidia,expected", [({"FINETUNE_COMPUTE_TYPE": "fp16"}, True, "fp16"),
                                                 ({}, False, "fp32"), ({}, True, "bf16")])
def test_light_compute_type(monkeypatch, env, nvidia, expected):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi" if nvidia else None)
    assert board.light_compute_type(env) == expected


def test_values_fit_the_pages_sliders():
    """gradio refuses a slider value outside its range when Start is pressed (seen with the demo's
    save_steps 100000): the argument set the page opens with stays inside."""
    values = board.clamp_to_page({"train.save_steps": 100000, "train.logging_steps": 0, "train.batch_size": 8,
                                  "train.learning_rate": "0.01"})
    assert values == {"train.save_steps": 5000, "train.logging_steps": 1, "train.batch_size": 8,
                      "train.learning_rate": "0.01"}
