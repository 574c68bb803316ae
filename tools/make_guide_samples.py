"""Write the small sample files the guide's examples use, so its commands can be followed as written.

    python tools/make_guide_samples.py

raw/chats.json (alpaca), raw/qa.csv, raw/chats.jsonl (OpenAI messages), raw/a.jsonl, raw/b.jsonl and
raw/mine.jsonl (ChatML, outside the Data dir), <data dir>/heldout.jsonl (ChatML, for invoke verify) and
prompts.jsonl (for invoke infer --prompts). Same files every time; existing ones are replaced.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.fileio import atomic_write_text, dumps_json, read_json  # noqa: E402
from finetune.layout import Layout  # noqa: E402

QA = [
    ("怎么退货？", "在订单页点击“申请退货”，按提示寄回商品即可。", "你是客服助手。"),
    ("运费谁出？", "质量问题的退货运费由我们承担。", "你是客服助手。"),
    ("How do I return an item?", "Open the order page and press 'Return', then ship it back.", ""),
    ("How long does a refund take?", "Refunds arrive within five working days.", ""),
]


def chatml(q: str, a: str, system: str = "") -> dict:
    msgs = [{"role": "system", "content": system}] if system else []
    return {"messages": msgs + [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def jsonl(records: list[dict]) -> str:
    return "".join(dumps_json(r) + "\n" for r in records)


def write_samples(layout: Layout) -> list[Path]:
    root, written = layout.root, []

    def put(path: Path, text: str) -> None:
        atomic_write_text(path, text)
        written.append(path)

    alpaca = read_json(root / "dataset" / "raw" / "sample_alpaca.json")
    put(root / "raw" / "chats.json", dumps_json(alpaca, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["question", "answer", "system"])
    writer.writerows(QA)
    put(root / "raw" / "qa.csv", buf.getvalue())
    openai = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a, _ in QA]
    put(root / "raw" / "chats.jsonl", jsonl(openai))
    put(root / "raw" / "a.jsonl", jsonl([chatml(q, a, s) for q, a, s in QA[:2]]))
    put(root / "raw" / "b.jsonl", jsonl([chatml(q, a, s) for q, a, s in QA[2:]]))
    put(root / "raw" / "mine.jsonl", jsonl([chatml(q, a, s) for q, a, s in QA]))
    put(layout.data_dir / "heldout.jsonl", jsonl([chatml(q, a) for q, a, _ in QA]))
    put(root / "prompts.jsonl", jsonl([{"prompt": q} for q, _, _ in QA[:2]]))
    return written


def main() -> int:
    layout = Layout.from_env()
    for path in write_samples(layout):
        print(f"wrote {path.relative_to(layout.root) if path.is_relative_to(layout.root) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
