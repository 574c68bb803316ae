#!/usr/bin/env python
"""Tokens per second of our inference path (``invoke infer``: LLaMA-Factory's chat engine through
finetune.inference.chat) against plain transformers + peft, same run, same prompts, greedy, one run.

    python benchmarks/infer_speed.py                 # makes a tiny model + a short LoRA run first
    python benchmarks/infer_speed.py --run RUN_ID    # an existing run (base + adapter)

Both paths generate the same greedy answers (checked); the timing alternates between them round by
round so that machine noise hits both. Prints tokens/s of each and the ratio ours / plain (goal >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DISABLE_VERSION_CHECK", "1")

PROMPTS = ["What is the capital of France?", "What is the capital of Japan?", "Tell me about Kenya.",
           "Hello! How can I help you today?"]


def make_run(workdir: Path) -> tuple[object, str]:
    sys.path.insert(0, str(ROOT / "tests" / "smoke"))
    import runs_support as rs

    rs._ROOT = workdir
    (workdir / "pyproject.toml").write_text("", encoding="utf-8")
    (workdir / "finetune").mkdir(exist_ok=True)
    res = rs.trained("bench")
    return rs.shared_layout(), res.run_id


def plain_loader(base: str, adapter: str | None, device: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()

    def answer(prompt: str, max_new_tokens: int) -> tuple[str, int]:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        ids = {k: v.to(device) for k, v in ids.items()}
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[0, ids["input_ids"].shape[1]:]
        eos = (new == tok.eos_token_id).nonzero()
        n = int(eos[0].item()) + 1 if len(eos) else len(new)
        return tok.decode(new, skip_special_tokens=True), n

    return answer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run id / folder (default: make a tiny one)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds over the prompts (default 5)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default 64)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args()

    from finetune.inference.chat import load
    from finetune.inference.resolve import resolve
    from finetune.layout import Layout

    if a.run:
        layout, run = Layout.from_env(), a.run
    else:
        layout, run = make_run(Path(tempfile.mkdtemp(prefix="infer-speed-")))
    ref = resolve(layout, run)
    ours = load(ref, infer_dtype="float32")
    device = str(next(ours.torch_model.parameters()).device)
    plain = plain_loader(ref.base, ref.adapter, device)

    def ours_answer(prompt: str, n: int) -> tuple[str, int]:
        r = ours.reply([{"role": "user", "content": prompt}], max_new_tokens=n)
        return r["text"], r["tokens"]

    # warm up both, and check they answer alike (same template, same greedy decoding)
    same = [ours_answer(q, a.max_new_tokens)[0] == plain(q, a.max_new_tokens)[0] for q in PROMPTS]
    totals = {"ours": [0, 0.0], "plain": [0, 0.0]}
    for r in range(a.rounds):
        order = (("ours", ours_answer), ("plain", plain)) if r % 2 == 0 else (("plain", plain), ("ours", ours_answer))
        for name, fn in order:
            t0 = time.perf_counter()
            tokens = sum(fn(q, a.max_new_tokens)[1] for q in PROMPTS)
            totals[name][0] += tokens
            totals[name][1] += time.perf_counter() - t0
    tps = {k: v[0] / v[1] for k, v in totals.items()}
    result = {"device": device, "run": ref.run_id or run, "rounds": a.rounds, "prompts": len(PROMPTS),
              "max_new_tokens": a.max_new_tokens, "same_answers": all(same),
              "ours_tokens_per_s": round(tps["ours"], 1), "plain_tokens_per_s": round(tps["plain"], 1),
              "ratio": round(tps["ours"] / tps["plain"], 3)}
    if a.json:
        print(json.dumps(result))
    else:
        print(f"device {device}; {a.rounds} rounds x {len(PROMPTS)} prompts, up to {a.max_new_tokens} new tokens")
        print(f"  invoke infer path (LLaMA-Factory chat engine): {result['ours_tokens_per_s']:.1f} tokens/s")
        print(f"  plain transformers + peft:                      {result['plain_tokens_per_s']:.1f} tokens/s")
        print(f"  ratio ours / plain: {result['ratio']:.3f}x (goal >= 0.95); same greedy answers: {result['same_answers']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
