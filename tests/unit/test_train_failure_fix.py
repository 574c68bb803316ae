"""A failed run's fix line follows what its log says: out of memory -> smaller batch / cutoff with the
run's own model, template and dataset; unloadable data -> data.check on the registered file; --resume
only where a complete checkpoint exists."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from finetune.llama_factory.train import failure_fix

ARGS = {"model_name_or_path": "/m/tiny", "template": "qwen", "dataset": "chats,more", "dataset_dir": "DATA",
        "per_device_train_batch_size": 8, "cutoff_len": 4096}


def _args(tmp_path: Path) -> dict:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(json.dumps({"chats": {"file_name": "chats-2025.jsonl"}}), encoding="utf-8")
    return {**ARGS, "dataset_dir": str(data)}


def _invocations(fix: str, task: str) -> list[list[str]]:
    """The arguments of each ``invoke TASK ...`` in the fix line (up to a bracket)."""
    parts = [re.split(r"[()]", part)[0] for part in fix.split("invoke ")[1:] if part.startswith(task)]
    return [shlex.split(part)[1:] for part in parts]


def test_out_of_memory_suggests_half_the_batch_and_cutoff(tmp_path):
    args = _args(tmp_path)
    for reason in ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
                   "RuntimeError: DefaultCPUAllocator: not enough memory: you tried to allocate 123 bytes"):
        fix = failure_fix(reason, "r1", tmp_path / "train.log", args, has_checkpoint=True)
        [train] = _invocations(fix, "train ")
        assert train == ["--model", "/m/tiny", "--template", "qwen", "--dataset", "chats",
                         "--batch-size", "4", "--cutoff", "2048"]
        [stats] = _invocations(fix, "data.stats")
        assert stats[0] == str(tmp_path / "data" / "chats-2025.jsonl")  # the registered file, not NAME.jsonl
        assert "--resume" not in fix  # resuming repeats the same batch


def test_data_that_does_not_load_points_at_data_check(tmp_path):
    fix = failure_fix("datasets.exceptions.DatasetGenerationError: An error occurred while generating the dataset",
                      "r1", tmp_path / "train.log", _args(tmp_path), has_checkpoint=True)
    assert f"invoke data.check {tmp_path / 'data' / 'chats-2025.jsonl'}" in fix
    assert "--resume" not in fix


def test_resume_is_offered_only_with_a_complete_checkpoint(tmp_path):
    log = tmp_path / "train.log"
    assert "invoke train --resume r1" in failure_fix("ValueError: x", "r1", log, ARGS, has_checkpoint=True)
    assert "--resume" not in failure_fix("ValueError: x", "r1", log, ARGS, has_checkpoint=False)
    assert "--resume" not in failure_fix("", "r1", log, {}, has_checkpoint=False)


def test_smallest_batch_stays_at_one():
    fix = failure_fix("torch.OutOfMemoryError: x", "r", Path("l"), {**ARGS, "per_device_train_batch_size": 1,
                                                                     "cutoff_len": 256}, has_checkpoint=False)
    assert "--batch-size 1 --cutoff 256" in fix


def test_a_silent_sigkill_is_treated_as_out_of_memory():
    fix = failure_fix("", "r", Path("l"), ARGS, has_checkpoint=True, returncode=-9)
    assert fix.startswith("the trainer was killed (SIGKILL)") and "--batch-size 4 --cutoff 2048" in fix
    assert "--resume" in failure_fix("", "r", Path("l"), ARGS, has_checkpoint=True, returncode=1)


def test_paths_with_spaces_are_quoted_and_a_small_cutoff_is_kept(tmp_path):
    args = {**ARGS, "model_name_or_path": "/my models/tiny", "cutoff_len": 128, "per_device_train_batch_size": 1}
    fix = failure_fix("torch.OutOfMemoryError: x", "r", Path("l"), args, has_checkpoint=False)
    [train] = _invocations(fix, "train ")
    assert train[:2] == ["--model", "/my models/tiny"] and train[-4:] == ["--batch-size", "1", "--cutoff", "128"]
