"""The demo owns its dataset: a changed raw sample replaces demo_facts.jsonl instead of stopping the demo
at a "pass --force" that `invoke demo` has no flag for."""

from __future__ import annotations

import json
import shutil

from finetune.demo import DEMO_DATASET, RAW_FACTS, Demo
from finetune.layout import Layout, find_root


def test_a_changed_raw_sample_replaces_the_demo_dataset(tmp_path):
    layout = Layout.from_env(root=tmp_path, env={})
    raw = tmp_path / RAW_FACTS
    raw.parent.mkdir(parents=True)
    shutil.copy2(find_root() / RAW_FACTS, raw)
    demo = Demo(layout, webui=False)
    demo.convert()
    out = layout.data_dir / f"{DEMO_DATASET}.jsonl"
    first = out.read_text(encoding="utf-8").splitlines()

    records = json.loads(raw.read_text(encoding="utf-8"))
    raw.write_text(json.dumps(records[:3]), encoding="utf-8")
    assert "3 conversations" in Demo(layout, webui=False).convert()
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3 < len(first)
