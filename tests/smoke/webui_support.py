"""Helpers shared by the Web UI smoke tests: a registered ChatML dataset and tiny training settings."""

from __future__ import annotations

import json

# A run that finishes in seconds on the CPU (values as the page's fields hold them).
TINY_BOARD_ARGS = {
    "train.max_samples": "16",
    "train.num_train_epochs": "1.0",
    "train.batch_size": 4,
    "train.gradient_accumulation_steps": 1,
    "train.cutoff_len": 128,
    "train.logging_steps": 1,
    "train.save_steps": 1000,
    "train.compute_type": "fp32",
    "train.extra_args": json.dumps({"optim": "adamw_torch", "preprocessing_num_workers": 1,
                                    "dataloader_num_workers": 0}),
}


def write_dataset(layout, name: str = "kit_demo", n: int = 16) -> str:
    """A small ChatML JSONL registered in the layout's dataset_info.json (the data helper's
    register_files when present, else the sharegpt entry with the full tag map written here)."""
    layout.ensure(layout.data_dir)
    path = layout.data_dir / f"{name}.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            rec = {"messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
            ]}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    try:
        from finetune.data.register import register_files
    except ImportError:
        register_files = None
    if register_files is not None:
        register_files(layout, [path])
        info = json.loads(layout.dataset_info.read_text(encoding="utf-8"))
        return next(k for k, v in info.items() if str(v.get("file_name", "")).replace("\\", "/").split("/")[-1] == path.name)
    entry = {
        "file_name": path.name, "formatting": "sharegpt", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"},
    }
    layout.dataset_info.write_text(json.dumps({name: entry}, indent=2), encoding="utf-8")
    return name
