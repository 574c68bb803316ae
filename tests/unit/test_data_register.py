"""data.register: safe, idempotent, atomic, never loses other entries, refuses errors unless forced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.data.chatml import dataset_entry
from finetune.data.register import register_files
from finetune.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                     {"role": "assistant", "content": "a"}]}


def write(path: Path, recs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


def test_register_keeps_other_entries_and_is_idempotent(layout):
    info = layout.dataset_info
    info.parent.mkdir(parents=True)
    user_entry = {"theirs": {"file_name": "theirs.json", "formatting": "alpaca", "custom": [1, 2]}}
    info.write_text(json.dumps(user_entry), encoding="utf-8")
    f = write(layout.data_dir / "chat.jsonl", [GOOD])
    res = register_files(layout, [f])
    data = json.loads(info.read_text(encoding="utf-8"))
    assert data["theirs"] == user_entry["theirs"]
    assert data["chat"] == dataset_entry("chat.jsonl") and res[0]["changed"]
    assert json.loads((info.parent / "dataset_info.json.bak").read_text(encoding="utf-8")) == user_entry
    mtime = info.stat().st_mtime_ns
    again = register_files(layout, [f])
    assert not again[0]["changed"] and info.stat().st_mtime_ns == mtime


def test_file_outside_data_dir_is_copied_and_names_are_safe(layout, tmp_path):
    a = write(tmp_path / "elsewhere" / "my data.jsonl", [GOOD])
    b = write(tmp_path / "other" / "my data.jsonl", [GOOD, GOOD])
    res = register_files(layout, [a])
    assert res[0]["copied"] and res[0]["name"] == "my-data"
    assert (layout.data_dir / "my data.jsonl").read_bytes() == a.read_bytes()
    with pytest.raises(UserError, match="differs"):
        register_files(layout, [b])
    sub = write(layout.data_dir / "team" / "x.jsonl", [GOOD])
    res = register_files(layout, [sub], names=["../../evil/name"])
    assert "/" not in res[0]["name"] and res[0]["entry"]["file_name"] == "team/x.jsonl"


def test_auto_name_collision_gets_suffix_explicit_is_refused(layout):
    a = write(layout.data_dir / "a" / "chat.jsonl", [GOOD])
    b = write(layout.data_dir / "b" / "chat.jsonl", [GOOD])
    ra = register_files(layout, [a])
    rb = register_files(layout, [b])
    assert (ra[0]["name"], rb[0]["name"]) == ("chat", "chat-2")
    with pytest.raises(UserError, match="already used"):
        register_files(layout, [b], names=["chat"])
    assert register_files(layout, [b], names=["chat"], force=True)[0]["entry"]["file_name"] == "b/chat.jsonl"


def test_errors_refused_unless_forced(layout):
    bad = write(layout.data_dir / "bad.jsonl", [GOOD, {"messages": [{"role": "user", "content": "u"}]}])
    with pytest.raises(UserError) as err:
        register_files(layout, [bad])
    assert "drop 1 of 2" in err.value.message and "bad.jsonl:2" in err.value.details[0]
    assert not layout.dataset_info.exists()
    res = register_files(layout, [bad], force=True)
    assert res[0]["dropped"] == 1


def test_tools_column_and_broken_info(layout):
    f = write(layout.data_dir / "t.jsonl", [{**GOOD, "tools": "[]"}])
    assert register_files(layout, [f])[0]["entry"]["columns"] == {"messages": "messages", "tools": "tools"}
    layout.dataset_info.write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        register_files(layout, [f])
    assert layout.dataset_info.read_text(encoding="utf-8") == "{not json"


def test_committed_sample_is_registered_correctly():
    info = json.loads((ROOT / "dataset" / "llamafactory" / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["sample_zh_en"] == dataset_entry("sample_zh_en.jsonl")
