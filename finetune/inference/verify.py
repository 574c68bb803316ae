"""Before / after on held-out conversations: did fine-tuning help?

For the base model and the fine-tuned one (adapter or merged), on a ChatML JSONL file:

* mean loss and perplexity on the assistant turns only (token-weighted), with the conversation
  encoded by LLaMA-Factory's template exactly as training encodes it (``encode_multiturn``: the
  prompt side is masked, every assistant turn counts, like ``mask_history: false``);
* exact and normalised match (case, punctuation and spacing ignored) of the greedy answer to the
  last user turn against the reference (the last assistant turn).

Both models are loaded through LLaMA-Factory's chat engine (see :mod:`finetune.inference.chat`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path
from typing import Any

from finetune import fileio
from finetune.errors import UserError
from finetune.inference.resolve import ModelRef, merge_record, resolve
from finetune.layout import Layout
from finetune.rundir import EVAL_PREFIX


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def read_conversations(path: Path, max_samples: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """(conversations usable for scoring, number skipped). Each: messages (no system), system, reference."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}", where="--data",
                        fix="pass a ChatML JSONL file of held-out conversations (one {\"messages\": [...]} a line)")
    convs, skipped = [], 0
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rec = fileio.parse_json(line, str(path))
                msgs = [{"role": m["role"], "content": m["content"]} for m in rec["messages"]]
            except (UserError, KeyError, TypeError):
                skipped += 1
                continue
            system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else None
            turns = msgs[1:] if system is not None else msgs
            roles = [m["role"] for m in turns]
            ok = (len(turns) >= 2 and len(turns) % 2 == 0
                  and all(r == ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles))
                  and all(isinstance(m["content"], str) for m in turns))
            if not ok:
                skipped += 1
                continue
            convs.append({"messages": turns, "system": system, "reference": turns[-1]["content"]})
            if max_samples and len(convs) >= max_samples:
                break
    if not convs:
        raise UserError(f"no usable conversations in {path} ({skipped} skipped)", where=str(path),
                        fix="check it: invoke data.check " + str(path))
    return convs, skipped


def assistant_loss(chat, convs: list[dict[str, Any]], cutoff_len: int = 2048) -> dict[str, float]:
    """Token-weighted mean cross-entropy on assistant tokens, as training computes it."""
    import torch
    import torch.nn.functional as F

    model = chat.torch_model
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode():
        for conv in convs:
            pairs = chat.template.encode_multiturn(chat.tokenizer, conv["messages"], conv["system"])
            ids: list[int] = []
            labels: list[int] = []
            for src, tgt in pairs:
                ids += list(src) + list(tgt)
                labels += [-100] * len(src) + list(tgt)
            ids, labels = ids[:cutoff_len], labels[:cutoff_len]
            if sum(1 for x in labels[1:] if x != -100) == 0:
                continue
            inp = torch.tensor([ids], device=device)
            logits = model(input_ids=inp).logits[0, :-1].float()
            target = torch.tensor(labels[1:], device=device)
            total_nll += F.cross_entropy(logits, target, ignore_index=-100, reduction="sum").item()
            total_tokens += int((target != -100).sum().item())
    mean = total_nll / max(total_tokens, 1)
    return {"loss": round(mean, 6), "perplexity": round(math.exp(min(mean, 50.0)), 4), "tokens": total_tokens}


def answer_match(chat, convs: list[dict[str, Any]], max_new_tokens: int | None = None) -> dict[str, Any]:
    answers, exact, norm = [], 0, 0
    for conv in convs:
        ref = conv["reference"]
        limit = max_new_tokens or min(256, len(chat.tokenizer(ref, add_special_tokens=False)["input_ids"]) + 16)
        got = chat.reply(conv["messages"][:-1], system=conv["system"], max_new_tokens=limit, temperature=0.0)["text"]
        answers.append(got)
        exact += got.strip() == ref.strip()
        norm += normalise(got) == normalise(ref)
    n = max(len(convs), 1)
    return {"exact_match": round(exact / n, 4), "normalised_match": round(norm / n, 4), "answers": answers}


def _score(ref: ModelRef, convs, cutoff: int, max_new_tokens: int | None) -> dict[str, Any]:
    from finetune.inference.chat import load

    chat = load(ref, infer_dtype="float32")
    try:
        out = {**assistant_loss(chat, convs, cutoff), **answer_match(chat, convs, max_new_tokens)}
    finally:
        chat.close()
    return out


def verify(layout: Layout, run_ref: str, data_file: str | Path, max_samples: int = 200,
           base: str | None = None, template: str | None = None, max_new_tokens: int | None = None,
           save: bool = True) -> dict[str, Any]:
    """Score base vs fine-tuned on ``data_file``; returns the report (also saved in the run folder)."""
    tuned = resolve(layout, run_ref, base=base, template=template)
    if tuned.adapter:
        base_path = tuned.base
    else:
        base_path = base or merge_record(Path(tuned.base)).get("base")
        if not base_path:
            raise UserError(f"{tuned.base} is a full model and its base model is unknown",
                            where=tuned.base, fix="pass the base model to compare against: --base PATH")
    base_ref = ModelRef(base=str(base_path), adapter=None, template=tuned.template, kind="model",
                        source=str(base_path), finetuning_type="full")
    convs, skipped = read_conversations(Path(data_file), max_samples)
    cutoff = int(tuned.cutoff_len or 2048)
    before = _score(base_ref, convs, cutoff, max_new_tokens)
    after = _score(tuned, convs, cutoff, max_new_tokens)
    examples = [{"prompt": c["messages"][-2]["content"], "reference": c["reference"], "base": b, "tuned": a}
                for c, b, a in list(zip(convs, before.pop("answers"), after.pop("answers"), strict=True))[:5]]
    report = {
        "run": tuned.run_id or tuned.source, "model": tuned.as_dict(), "base_model": str(base_path),
        "data": str(Path(data_file).resolve()), "samples": len(convs), "skipped": skipped,
        "base": before, "tuned": after,
        "delta": {"loss": round(after["loss"] - before["loss"], 6),
                  "exact_match": round(after["exact_match"] - before["exact_match"], 4),
                  "normalised_match": round(after["normalised_match"] - before["normalised_match"], 4)},
        "examples": examples,
    }
    if save and tuned.run_dir and Path(tuned.run_dir).is_dir():
        out = Path(tuned.run_dir) / f"{EVAL_PREFIX}{Path(data_file).stem}.json"
        fileio.atomic_write_text(out, fileio.dumps_json(report, indent=2) + "\n")
        report["saved"] = str(out)
    return report


def render(report: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"verify {report['run']} on {Path(report['data']).name} ({report['samples']} conversations)")
    for col in ("model", "loss", "perplexity", "exact match", "normalised match"):
        table.add_column(col)
    for name in ("base", "tuned"):
        r = report[name]
        table.add_row(name, f"{r['loss']:.4f}", f"{r['perplexity']:.2f}", f"{r['exact_match']:.0%}",
                      f"{r['normalised_match']:.0%}")
    console.print(table)
    for ex in report["examples"][:3]:
        console.print(f"[dim]prompt[/] {ex['prompt']!r}\n  reference {ex['reference']!r}\n  base      {ex['base']!r}\n"
                      f"  tuned     {ex['tuned']!r}")
    if report.get("saved"):
        console.print(f"saved: {report['saved']}")
    better = report["delta"]["loss"] < 0
    console.print("fine-tuning lowered the loss" if better else "[yellow]fine-tuning did not lower the loss[/]")
