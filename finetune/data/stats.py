"""Token lengths of ChatML conversations with the model's own tokenizer, and a suggested cutoff.

A conversation's length is the length of the model's chat template applied to it (what
LLaMA-Factory's matching template produces, up to a few special tokens); when the tokenizer has no
chat template, the contents are tokenized and 5 tokens per message are added for the role markers.
Tokenization is batched. Heavy: imports transformers inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import orjson

from finetune.errors import UserError

PER_MESSAGE_OVERHEAD = 5  # <|im_start|> role \n ... <|im_end|> \n
_ROLE_FOR_TEMPLATE = {"function_call": "assistant", "observation": "user"}
BATCH = 256


def load_tokenizer(path: str | Path):
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"no tokenizer at {path}", fix="pass --tokenizer with a model folder (with tokenizer.json)")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError("token stats need the training stack (transformers)",
                        fix="install it: python -m nox -s smoke leaves it in .nox/smoke (or pip install -e '.[train]')") from None
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a tokenizer from {path}: {err}", fix="pass a model folder with tokenizer files") from None


def _text(tokenizer, messages: list) -> tuple[str, int]:
    """The text to tokenize and the extra tokens to add."""
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": _ROLE_FOR_TEMPLATE.get(m.get("role"), m.get("role")), "content": m.get("content") or ""}
                for m in messages]
        try:
            return tokenizer.apply_chat_template(msgs, tokenize=False), 0
        except Exception:  # noqa: BLE001 - a template that rejects the roles: fall back below
            pass
    return "\n".join(str(m.get("content") or "") for m in messages), PER_MESSAGE_OVERHEAD * len(messages)


def conversation_lengths(tokenizer, conversations: Sequence[list]) -> list[int]:
    """Token count of each conversation (list of messages), tokenized in batches."""
    out: list[int] = []
    for start in range(0, len(conversations), BATCH):
        pairs = [_text(tokenizer, msgs) for msgs in conversations[start:start + BATCH]]
        enc = tokenizer([t for t, _ in pairs], add_special_tokens=False)["input_ids"]
        out += [len(ids) + extra for ids, (_, extra) in zip(enc, pairs, strict=True)]
    return out


def _percentile(sorted_vals: list[int], q: float) -> int:
    if not sorted_vals:
        return 0
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def suggest_cutoff(sorted_vals: list[int]) -> int:
    """The smallest power-of-two-ish step (256 multiples) that fits 99% of conversations."""
    p99 = _percentile(sorted_vals, 99)
    steps = [256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 32768]
    return next((s for s in steps if s >= p99), p99)


def token_stats(path: str | Path, tokenizer_path: str | Path, cutoff: int = 1024,
                histogram: str | Path | None = None, tokenizer=None) -> dict:
    """Token length statistics of the conversations in ``path`` that have a messages list."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}", fix="pass a ChatML .jsonl file")
    tokenizer = tokenizer or load_tokenizer(tokenizer_path)
    lengths: list[int] = []
    skipped = 0
    batch: list[list] = []
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                rec = orjson.loads(raw.lstrip(b"\xef\xbb\xbf"))
                msgs = rec["messages"]
                if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                skipped += 1
                continue
            batch.append(msgs)
            if len(batch) >= BATCH * 4:
                lengths += conversation_lengths(tokenizer, batch)
                batch = []
    if batch:
        lengths += conversation_lengths(tokenizer, batch)
    vals = sorted(lengths)
    result = {
        "path": str(path), "conversations": len(vals), "skipped": skipped, "cutoff": cutoff,
        "p50": _percentile(vals, 50), "p90": _percentile(vals, 90), "p99": _percentile(vals, 99),
        "max": vals[-1] if vals else 0, "mean": round(sum(vals) / len(vals), 1) if vals else 0,
        "truncated": sum(1 for v in vals if v > cutoff),
        "suggested_cutoff": suggest_cutoff(vals),
        "histogram": None,
    }
    if histogram and vals:
        result["histogram"] = str(_histogram(vals, cutoff, Path(histogram)))
    return result


def _histogram(vals: list[int], cutoff: int, out: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("the histogram needs matplotlib", fix="pip install matplotlib (part of the train extra)") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(vals, bins=min(60, max(5, len(set(vals)))), color="#4c72b0")
    ax.axvline(cutoff, color="#c44e52", linestyle="--", label=f"cutoff {cutoff}")
    ax.set_xlabel("tokens per conversation")
    ax.set_ylabel("conversations")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def render(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(soft_wrap=True)
    table = Table(title=f"token lengths: {result['path']}")
    for col in ("conversations", "p50", "p90", "p99", "max", f"> cutoff {result['cutoff']}", "suggested cutoff"):
        table.add_column(col, justify="right")
    table.add_row(*(str(result[k]) for k in ("conversations", "p50", "p90", "p99", "max", "truncated",
                                                "suggested_cutoff")))
    console.print(table)
    if result["skipped"]:
        console.print(f"[yellow]{result['skipped']} line(s) skipped (not ChatML); run invoke data.check[/]")
    if result.get("histogram"):
        console.print(f"histogram: {result['histogram']}")
