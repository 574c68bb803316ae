"""TrainSpec -> the two files the Web UI writes (light: no torch)."""

import json

import pytest

from finetune.llama_factory.args import (
    BOARD_SKIP_IDS,
    UI_DEFAULTS,
    TrainSpec,
    clean_args,
    default_workers,
    known_templates,
    nearest,
)


def spec(**kw):
    base = dict(model_path="/models/m", template="qwen", dataset="a, b", dataset_dir="/data", output_dir="/out/r1",
                compute_type="fp32")
    base.update(kw)
    return TrainSpec(**base)


def test_training_args_carry_the_settings_and_web_ui_constants():
    args = spec(learning_rate=1e-4, num_train_epochs=2, lora_rank=16, lora_alpha=32, save_steps=7).to_training_args()
    assert args["dataset"] == "a,b" and args["dataset_dir"] == "/data" and args["output_dir"] == "/out/r1"
    assert args["learning_rate"] == 1e-4 and args["num_train_epochs"] == 2.0 and args["save_steps"] == 7
    assert args["lora_rank"] == 16 and args["lora_alpha"] == 32 and args["lora_target"] == "all"
    # what the page always adds
    assert args["stage"] == "sft" and args["do_train"] is True and args["finetuning_type"] == "lora"
    assert args["plot_loss"] is True and args["trust_remote_code"] is True and args["ddp_timeout"] == 180000000
    assert args["include_num_input_tokens_seen"] is True and args["optim"] == "adamw_torch"
    assert args["report_to"] == "none" and args["packing"] is False and args["enable_thinking"] is True
    # cleaned like the page: False / None / "" dropped
    for dropped in ("fp16", "bf16", "pure_bf16", "use_galore", "cache_dir", "rope_scaling", "use_dora",
                    "neftune_noise_alpha", "quantization_bit"):
        assert dropped not in args, dropped


@pytest.mark.parametrize("ct,key", [("bf16", "bf16"), ("fp16", "fp16"), ("pure_bf16", "pure_bf16")])
def test_compute_type_maps_to_one_flag(ct, key):
    args = spec(compute_type=ct).to_training_args()
    assert args[key] is True
    assert sum(k in args for k in ("bf16", "fp16", "pure_bf16")) == 1


def test_workers_sized_to_the_machine_not_16():
    assert default_workers(2) == 1 and default_workers(8) == 7 and default_workers(64) == 16
    assert spec().to_training_args()["preprocessing_num_workers"] == default_workers()


def test_extra_and_quantization_and_validation():
    args = spec(extra={"ddp_backend": "gloo", "optim": "sgd"}, quantization_bit=4).to_training_args()
    assert args["ddp_backend"] == "gloo" and args["optim"] == "sgd"
    assert args["quantization_bit"] == 4 and args["quantization_method"] == "bnb" and args["double_quantization"]
    with pytest.raises(ValueError):
        spec(stage="nope")
    with pytest.raises(ValueError):
        spec(compute_type="int3")
    with pytest.raises(ValueError):
        TrainSpec(model_path="/m").to_training_args()  # no output dir


def test_board_config_is_the_page_fields():
    board = spec(learning_rate=1e-4, per_device_train_batch_size=4, extra={"ddp_backend": "gloo"}).to_board_config()
    assert next(iter(board)) == "top.model_name"  # set first: changing it later resets path and template
    assert board["top.model_path"] == "/models/m" and board["top.template"] == "qwen"
    assert board["train.dataset"] == ["a", "b"] and board["train.dataset_dir"] == "/data"
    assert board["train.output_dir"] == "/out/r1" and board["train.batch_size"] == 4
    assert board["train.learning_rate"] == "0.0001" and board["train.training_stage"] == "Supervised Fine-Tuning"
    assert json.loads(board["train.extra_args"]) == {"optim": "adamw_torch", "ddp_backend": "gloo"}
    assert set(board) <= set(UI_DEFAULTS)
    saved = spec().to_board_config(include_paths=False)
    assert not set(BOARD_SKIP_IDS) & set(saved)


def test_clean_args_keeps_the_page_exceptions():
    out = clean_args({"packing": False, "x": False, "y": None, "z": "", "double_quantization": False, "k": 0})
    assert out == {"packing": False, "double_quantization": False, "k": 0}


def test_known_templates_read_without_import():
    names = known_templates()
    if not names:
        pytest.skip("LLaMA-Factory not installed in this venv")
    assert "qwen" in names and "llama3" in names
    assert "qwen" in nearest("qwenn", names)
