import json

import pytest

from finetune.llama_factory import distributed as dist
from finetune.llama_factory.presets import ModelShape, bytes_per_token, size_batch, throughput_preset

# Qwen2-0.5B's shape, the model of the measured H200 numbers in docs/field-notes.md#h200-throughput.
QWEN05 = ModelShape(hidden_size=896, num_layers=24, vocab_size=151936, num_params=494_000_000)


def test_single_process_sets_no_variables():
    assert dist.DistSpec().env() == {}
    assert dist.DistSpec().problems() == []


def test_two_ranks_map_onto_llamafactory_variables():
    env = dist.DistSpec(nproc_per_node=2, master_port=29511).env()
    assert env == {"FORCE_TORCHRUN": "1", "NNODES": "1", "NODE_RANK": "0", "NPROC_PER_NODE": "2",
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}


def test_all_problems_are_reported_together():
    spec = dist.DistSpec(nproc_per_node=0, nnodes=2, node_rank=5, master_addr="127.0.0.1", master_port=80,
                         deepspeed="z9")
    problems = spec.problems()
    assert len(problems) == 5
    assert any("--node-rank 5" in p for p in problems) and any("loopback" in p for p in problems)
    assert any("--deepspeed" in p for p in problems)


def test_node_commands_one_per_node():
    cmds = dist.DistSpec(nproc_per_node=8, nnodes=2, master_addr="10.0.0.1", deepspeed="z3").node_commands()
    assert len(cmds) == 2 and "--node-rank 0" in cmds[0] and "--node-rank 1" in cmds[1]
    assert all("--master-addr 10.0.0.1" in c and "--deepspeed z3" in c for c in cmds)


@pytest.mark.parametrize("kind,stage,offload", [("z2", 2, False), ("z3", 3, False), ("z2-offload", 2, True),
                                                 ("z3-offload", 3, True)])
def test_deepspeed_configs(tmp_path, kind, stage, offload):
    path = dist.write_deepspeed_config(tmp_path, kind)
    cfg = json.loads(path.read_text(encoding="utf-8"))
    assert cfg["zero_optimization"]["stage"] == stage
    assert ("offload_optimizer" in cfg["zero_optimization"]) == offload
    assert cfg["train_micro_batch_size_per_gpu"] == "auto"


def test_gloo_backend_without_cuda():
    from finetune.llama_factory.scale import scale_settings

    cpu = scale_settings("/m", dist.DistSpec(nproc_per_node=2), free_gib=None)
    assert cpu.extra == {"ddp_backend": "gloo"} and cpu.env["FORCE_TORCHRUN"] == "1" and not cpu.problems
    gpu = scale_settings("/m", dist.DistSpec(nproc_per_node=2, deepspeed="z2"), free_gib=80.0)
    assert "ddp_backend" not in gpu.extra and gpu.extra["deepspeed"] == "z2"


def test_scale_problems_are_returned_together_not_raised():
    from finetune.llama_factory.scale import scale_settings

    bad = scale_settings("/m", dist.DistSpec(nproc_per_node=0), preset="fast", quantization_bit=3, free_gib=None)
    assert len(bad.problems) == 3 and any("--preset" in p for p in bad.problems)


def test_h200_sizing_matches_the_measured_best_setting():
    # docs/field-notes.md#h200-throughput: batch 32, packing, no gradient checkpointing gave 59.4k tokens/s on an H200.
    batch, ckpt, why = size_batch(139.0, QWEN05, 1024)
    assert batch == 32 and ckpt is False, why


def test_small_card_turns_checkpointing_on():
    batch, ckpt, _ = size_batch(8.0, QWEN05, 4096)
    assert ckpt is True and batch >= 1


def test_sizing_is_monotonic_in_memory():
    batches = [size_batch(gib, QWEN05, 1024)[0] for gib in (8, 16, 24, 40, 80, 139)]
    assert batches == sorted(batches)


def test_checkpointing_saves_activation_memory():
    # layers shrink ~17x; the fp32 logits (unchanged by recomputation) dominate what is left
    assert bytes_per_token(QWEN05, True) < 0.6 * bytes_per_token(QWEN05, False)


def test_preset_arguments():
    p = throughput_preset(QWEN05, 139.0, flash_attn_installed=False, liger_installed=True)
    assert p.args["packing"] is True and p.args["neat_packing"] is True
    assert p.args["disable_gradient_checkpointing"] is True and p.args["flash_attn"] == "sdpa"
    assert p.args["bf16"] is True and p.args["enable_liger_kernel"] is True
    assert throughput_preset(QWEN05, None).args == {}


def test_model_shape_from_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 500,
                                                      "intermediate_size": 128, "tie_word_embeddings": True}),
                                          encoding="utf-8")
    shape = ModelShape.from_config(tmp_path)
    assert shape.num_params == 500 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128)


def test_throughput_argument_set_for_the_web_ui():
    from finetune.llama_factory.board import throughput_values

    base = {"train.batch_size": 2, "train.extra_args": json.dumps({"optim": "adamw_torch"}),
            "train.compute_type": "fp32", "train.cutoff_len": 1024}
    p = throughput_preset(QWEN05, 139.0)
    vals = throughput_values(base, p.args)
    assert vals["train.batch_size"] == 32 and vals["train.compute_type"] == "bf16"
    extra = json.loads(vals["train.extra_args"])
    assert extra["optim"] == "adamw_torch" and extra["packing"] is True
    assert extra["disable_gradient_checkpointing"] is True and "per_device_train_batch_size" not in extra
    assert base["train.batch_size"] == 2  # the default set is untouched
