from datetime import datetime
from pathlib import Path, PureWindowsPath

import pytest

from finetune.layout import Layout, find_root, new_run_id, slugify


def test_defaults_are_under_root(tmp_path):
    lay = Layout.from_env(root=tmp_path, env={})
    assert lay.data_dir == tmp_path / "dataset" / "llamafactory"
    assert lay.outputs_dir == tmp_path / "finetune" / "outputs" / "llamafactory"
    assert lay.logs_dir == tmp_path / "finetune" / "logs" / "llamafactory"
    assert lay.run_dir("r1") == lay.outputs_dir / "r1"
    assert lay.log_dir("r1") == lay.logs_dir / "r1"
    assert lay.dataset_info == lay.data_dir / "dataset_info.json"
    assert not lay.data_dir.exists(), "folders are created on demand, not on construction"


def test_env_then_flags_override(tmp_path):
    env = {"FINETUNE_OUTPUTS_DIR": str(tmp_path / "big"), "FINETUNE_DATA_DIR": "mydata"}
    lay = Layout.from_env(root=tmp_path, env=env)
    assert lay.outputs_dir == tmp_path / "big"
    assert lay.data_dir == tmp_path / "mydata"  # relative values are under the root
    lay2 = Layout.from_env(root=tmp_path, env=env, outputs_dir=tmp_path / "flag")
    assert lay2.outputs_dir == tmp_path / "flag"


def test_env_root(tmp_path):
    lay = Layout.from_env(env={"FINETUNE_ROOT": str(tmp_path)})
    assert lay.root == tmp_path.resolve()


def test_unknown_override_is_an_error(tmp_path):
    with pytest.raises(TypeError):
        Layout.from_env(root=tmp_path, env={}, nonsense="x")


def test_run_ids_sort_by_time_and_are_safe():
    a = new_run_id("lora tiny/../x", datetime(2026, 1, 2, 3, 4, 5))
    b = new_run_id("lora", datetime(2026, 1, 2, 3, 4, 6))
    assert a == "20260102-030405-lora-tiny-..-x"
    assert "/" not in a and "\\" not in a
    assert sorted([b, a]) == [a, b]
    assert PureWindowsPath(a).name == a  # a single path component on Windows too


def test_new_run_never_reuses_a_folder(tmp_path):
    lay = Layout.from_env(root=tmp_path, env={})
    now = datetime(2026, 1, 1, 0, 0, 0)
    first = lay.new_run("x", now)
    lay.run_dir(first).mkdir(parents=True)
    second = lay.new_run("x", now)
    assert second != first and second.startswith(first)


def test_slugify():
    assert slugify("a b:c*?") == "a-b-c"
    assert slugify("////") == "run"
    assert slugify("客服 对话/v1") == "客服-对话-v1"  # the team's own run names survive
    assert slugify("cafe\u0301") == "caf\u00e9"  # one spelling on every file system (NFC)


def test_run_ids_in_any_script_are_recognised():
    from finetune.layout import RUN_ID_RE

    rid = new_run_id("客服 v1", datetime(2026, 1, 2, 3, 4, 5))
    assert rid == "20260102-030405-客服-v1" and RUN_ID_RE.match(rid)
    assert not RUN_ID_RE.match("20260102-030405-a/b")


def test_find_root_walks_up(tmp_path):
    (tmp_path / "pyproject.toml").write_text("", encoding="utf-8")
    (tmp_path / "finetune").mkdir()
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_root(deep) == tmp_path.resolve()


def test_ensure_creates(tmp_path):
    lay = Layout.from_env(root=tmp_path, env={})
    lay.ensure()
    assert lay.data_dir.is_dir() and lay.outputs_dir.is_dir() and lay.logs_dir.is_dir()
    assert isinstance(lay.as_dict()["root"], str) and Path(lay.as_dict()["root"]) == tmp_path.resolve()
