"""The demo proves learning: the tiny base knows none of the facts, the LoRA run answers them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.smoke
ROOT = Path(__file__).resolve().parents[2]


def test_demo_chain_learns_the_facts(tmp_path):
    from finetune.demo import GOAL_EXACT, RAW_BACKGROUND, RAW_FACTS, Demo
    from finetune.layout import Layout

    for rel in (RAW_FACTS, RAW_BACKGROUND):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    # the repo's model cache: `nox -s smoke` ran `invoke demo` first, so the tiny base is made once
    layout = Layout.from_env(root=tmp_path, env={}, models_dir=Layout.from_env(root=ROOT, env={}).models_dir)
    result = Demo(layout, webui=False, progress=False).run()
    assert [s.status for s in result.stages] == ["ok"] * len(result.stages)
    assert result.base_exact is not None and result.base_exact <= 0.1
    assert result.tuned_exact >= GOAL_EXACT
    assert (Path(result.run_dir) / "adapter_model.safetensors").is_file()
    assert (layout.data_dir / "demo_facts.jsonl").is_file() and layout.dataset_info.is_file()


def test_demo_stops_at_the_named_stage(tmp_path):
    from finetune.demo import Demo
    from finetune.errors import UserError
    from finetune.layout import Layout

    layout = Layout.from_env(root=tmp_path, env={})
    with pytest.raises(UserError) as err:
        Demo(layout, model=str(tmp_path / "no-model"), webui=False, progress=False).run()
    assert "stage 'base model'" in err.value.message and "--model" in err.value.fix
