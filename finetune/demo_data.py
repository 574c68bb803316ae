"""The demo's data, made deterministically (``tools/make_demo_data.py`` writes the committed files).

* ``dataset/raw/demo_facts.json`` (alpaca, the raw input the demo converts): made-up facts about
  fictional projects, half in English, half in Chinese. No model can know them in advance.
* ``dataset/raw/demo_background.jsonl`` (ChatML): the same kind of question about *other*
  fictional projects. The tiny base model gets a short full-parameter pass over it when it is
  made, so it speaks the demo's language (and answers in the right shape, with the wrong city);
  LoRA then has to learn the facts themselves.
"""

from __future__ import annotations

import random
from pathlib import Path

from finetune import fileio

SYLLABLES = ["ka", "lo", "mi", "ra", "su", "te", "vo", "zen", "pa", "qui", "dor", "fel", "gri", "hon",
             "jas", "bel", "cor", "nim", "tav", "wex"]
CITIES_EN = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Perth", "Seoul", "Dakar", "Hanoi", "Rome", "Bern"]
CITIES_ZH = ["北京", "上海", "广州", "深圳", "杭州", "成都", "西安", "南京", "武汉", "重庆", "苏州", "天津"]


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()


def _pair(name: str, rng: random.Random, zh: bool) -> tuple[str, str]:
    if zh:
        city = rng.choice(CITIES_ZH)
        return f"{name}项目的总部在哪里？", f"{name}项目的总部在{city}。"
    city = rng.choice(CITIES_EN)
    return f"Where is the {name} project based?", f"The {name} project is based in {city}."


def make_pairs(n_facts: int = 16, n_background: int = 400, seed: int = 7):
    rng = random.Random(seed)
    used: set[str] = set()
    facts: list[tuple[str, str]] = []
    background: list[tuple[str, str]] = []
    for target, size in ((facts, n_facts), (background, n_background)):
        while len(target) < size:
            name = _name(rng)
            if name not in used:
                used.add(name)
                target.append(_pair(name, rng, zh=len(target) % 2 == 1))
    return facts, background


def write_demo_data(raw_dir: Path, n_facts: int = 16, n_background: int = 400, seed: int = 7) -> tuple[Path, Path]:
    facts, background = make_pairs(n_facts, n_background, seed)
    raw_dir.mkdir(parents=True, exist_ok=True)
    facts_path = raw_dir / "demo_facts.json"
    fileio.atomic_write_text(facts_path, fileio.dumps_json([{"instruction": q, "input": "", "output": a}
                                                            for q, a in facts], indent=1) + "\n")
    bg_path = raw_dir / "demo_background.jsonl"
    fileio.atomic_write_text(bg_path, "".join(
        fileio.dumps_json({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
        for q, a in background))
    return facts_path, bg_path
