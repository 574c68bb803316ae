"""Ask LLaMA-Factory itself what it does with a ChatML file (heavy; used by tests and benchmarks).

:func:`lf_outcome` registers one file with our own :func:`finetune.data.chatml.dataset_entry`
in a throw-away ``dataset_info.json`` and runs LLaMA-Factory's real loader, converter and
supervised preprocessor (``llamafactory.data.get_dataset``) with a tokenizer. Each conversation
carries a marker (``ID000123``); the markers found in the tokenized output tell which
conversations survived. Heavy imports stay inside the function.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MARKER_RE = re.compile(r"ID(\d{6})")


def marker(n: int) -> str:
    return f"ID{n:06d}"


@dataclass
class LFOutcome:
    ok: bool
    kept: set[int] = field(default_factory=set)  # markers that survived
    error: str = ""
    rows: int = 0


def lf_outcome(path: Path, tokenizer_dir: Path, workers: int | None = None, cutoff: int = 100_000,
               has_tools: bool = False) -> LFOutcome:
    """Run LLaMA-Factory's loader + sharegpt converter + SFT preprocessing on ``path``."""
    import os

    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    from finetune.data.chatml import dataset_entry

    path = Path(path).resolve()
    with tempfile.TemporaryDirectory(prefix="lf-oracle-") as tmp:
        tmp_path = Path(tmp)
        info = {"probe": dataset_entry(str(path), has_tools=has_tools)}  # absolute: os.path.join keeps it
        (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
        args = dict(
            stage="sft", do_train=True, model_name_or_path=str(tokenizer_dir), finetuning_type="lora",
            dataset="probe", dataset_dir=str(tmp_path), template="qwen", cutoff_len=cutoff,
            output_dir=str(tmp_path / "out"), overwrite_cache=True, preprocessing_num_workers=workers,
            report_to="none", per_device_train_batch_size=1, cache_dir=str(tmp_path / "cache"),
        )
        model_args, data_args, training_args, _, _ = get_train_args(args)
        tokenizer_module = load_tokenizer(model_args)
        tokenizer = tokenizer_module["tokenizer"]
        template = get_template_and_fix_tokenizer(tokenizer, data_args)
        try:
            module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
        except Exception as err:  # noqa: BLE001 - the oracle reports LF's failure, whatever it is
            return LFOutcome(ok=False, error=f"{type(err).__name__}: {err}"[:2000])
        ds = module["train_dataset"]
        kept: set[int] = set()
        for ids in ds["input_ids"]:
            kept.update(int(m) for m in MARKER_RE.findall(tokenizer.decode(ids)))
        return LFOutcome(ok=True, kept=kept, rows=len(ds))


# Corpora with planted faults (tests and benchmarks) ---------------------------------------------
DROP_FAULTS = ("empty", "only-system", "ends-on-user", "assistant-first", "system-in-middle", "unknown-role",
               "missing-role", "two-systems")

_WORDS = ("the model answers questions about data, training and evaluation with care; "
          "数据 训练 评估 模型 回答 问题 ").split()


def _text(rng, n: int, tag: str) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n)) + f" {tag}"


def planted_conversation(rng, n: int, fault: str | None, words: int = 30) -> dict:
    """Conversation ``n`` (its marker in every content); ``fault`` one of DROP_FAULTS or None."""
    tag = marker(n)
    turns = []
    if rng.random() < 0.4:
        turns.append({"role": "system", "content": _text(rng, 8, tag)})
    for _ in range(rng.randint(1, 3)):
        turns.append({"role": "user", "content": _text(rng, words, tag)})
        turns.append({"role": "assistant", "content": _text(rng, words * 2, tag)})
    if fault == "empty":
        turns = []
    elif fault == "only-system":
        turns = [{"role": "system", "content": _text(rng, 5, tag)}]
    elif fault == "ends-on-user":
        turns = turns[:-1]
    elif fault == "assistant-first":
        turns = [t for t in turns if t["role"] != "system"]
        turns[0], turns[1] = turns[1], turns[0]
    elif fault == "system-in-middle":
        turns.insert(len(turns) - 1, {"role": "system", "content": _text(rng, 5, tag)})
    elif fault == "unknown-role":
        turns[-1]["role"] = "tool"
    elif fault == "missing-role":
        del turns[-1]["role"]
    elif fault == "two-systems":
        turns.insert(0, {"role": "system", "content": _text(rng, 5, tag)})
        turns.insert(0, {"role": "system", "content": _text(rng, 5, tag)})
    return {"messages": turns}


def write_planted_corpus(path: Path, n: int, n_bad: int, seed: int = 0, words: int = 30) -> set[int]:
    """Write ``n`` conversations (JSONL) with ``n_bad`` drop faults spread evenly; returns bad markers."""
    import random

    import orjson

    rng = random.Random(seed)
    bad = set(rng.sample(range(n), n_bad))
    faults = DROP_FAULTS
    with Path(path).open("wb") as fh:
        for i in range(n):
            fault = faults[i % len(faults)] if i in bad else None
            fh.write(orjson.dumps(planted_conversation(rng, i, fault, words)) + b"\n")
    return bad
