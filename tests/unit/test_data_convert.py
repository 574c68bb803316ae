"""data.convert on LLaMA-Factory's own demo files and on hand-made raw files; nothing lost silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.data.check import check_file
from finetune.data.convert import convert_file
from finetune.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("name,fmt,tools", [
    ("alpaca_en_demo.json", "alpaca", False), ("alpaca_zh_demo.json", "alpaca", False),
    ("identity.json", "alpaca", False), ("glaive_toolcall_en_demo.json", "sharegpt", True),
])
def test_lf_demo_files_convert_and_pass_check(layout, lf_demo_dir, name, fmt, tools):
    src = lf_demo_dir / name
    res = convert_file(src, layout)
    assert res.fmt == fmt and res.out_path.parent == layout.data_dir
    total = len(json.loads(src.read_text(encoding="utf-8")))
    assert res.written + res.rejected == total and res.written > 0
    report = check_file(res.out_path)
    assert report.errors == 0 and report.valid == res.written
    assert report.has_tools is tools


def test_alpaca_matches_lf_rules(layout, tmp_path):
    src = tmp_path / "raw.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"instruction": "Add", "input": "1 2", "output": "3", "system": "math"},
        {"instruction": "again?", "input": "", "output": "yes", "history": [["q", "a"]]},
        {"instruction": "no answer", "input": "", "output": ""},
        {"instruction": 5, "output": "x"},
    ]) + "\n{broken\n", encoding="utf-8")
    res = convert_file(src, layout, name="my data/../x")
    assert res.out_path.parent == layout.data_dir and "/" not in res.out_path.name
    rows = read_jsonl(res.out_path)
    assert rows[0]["messages"] == [{"role": "system", "content": "math"}, {"role": "user", "content": "Add\n1 2"},
                                   {"role": "assistant", "content": "3"}]
    assert [m["role"] for m in rows[1]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert res.written == 2 and res.rejected == 3
    rejects = read_jsonl(res.rejects_path)
    assert [r["line"] for r in rejects] == [3, 4, 5]
    assert all(r["reason"] for r in rejects)


def test_openai_messages_with_parts_and_tools(layout, tmp_path):
    src = tmp_path / "oa.jsonl"
    recs = [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                      {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "weather?"},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Paris\"}"}}]},
                      {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "It is sunny."}],
         "tools": [{"name": "w"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]},
                      {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
    ]
    src.write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    res = convert_file(src, layout)
    assert res.fmt == "openai" and res.written == 2 and res.rejected == 2
    rows = read_jsonl(res.out_path)
    assert rows[0]["messages"][1] == {"role": "user", "content": "hi"}
    assert [m["role"] for m in rows[1]["messages"]] == ["user", "function_call", "observation", "assistant"]
    assert json.loads(rows[1]["messages"][1]["content"]) == [{"name": "w", "arguments": {"city": "Paris"}}]
    assert isinstance(rows[1]["tools"], str)
    assert check_file(res.out_path).errors == 0
    reasons = [r["reason"] for r in read_jsonl(res.rejects_path)]
    assert "image_url" in reasons[0] and "ends-on-user" in reasons[1]


def test_csv_and_tsv_columns(layout, tmp_path):
    src = tmp_path / "qa.csv"
    src.write_text("q,a,sys\n\"What, exactly?\",Answer one,be brief\n问题,回答,\nempty,,\n", encoding="utf-8")
    res = convert_file(src, layout, question_col="q", answer_col="a", system_col="sys")
    rows = read_jsonl(res.out_path)
    assert rows[0]["messages"][0] == {"role": "system", "content": "be brief"}
    assert rows[1]["messages"] == [{"role": "user", "content": "问题"}, {"role": "assistant", "content": "回答"}]
    assert res.rejected == 1 and read_jsonl(res.rejects_path)[0]["line"] == 4
    tsv = tmp_path / "qa.tsv"
    tsv.write_text("question\tanswer\nhi\tthere\n", encoding="utf-8")
    with pytest.raises(UserError, match="already exists") as err:  # qa.jsonl from the CSV is not replaced
        convert_file(tsv, layout)
    assert "--force" in err.value.fix and len(read_jsonl(res.out_path)) == 2
    forced = convert_file(tsv, layout, force=True)
    assert forced.written == 1 and forced.replaced == [str(res.out_path)]
    with pytest.raises(UserError, match="column"):
        convert_file(src, layout, question_col="nope")


def test_sample_raw_file_converts(layout):
    res = convert_file(ROOT / "dataset" / "raw" / "sample_alpaca.json", layout)
    assert res.rejected == 0 and res.written >= 5 and check_file(res.out_path).errors == 0


def test_unknown_format_and_nothing_converted(layout, tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_text('{"foo": 1}\n', encoding="utf-8")
    with pytest.raises(UserError, match="format"):
        convert_file(src, layout)
    with pytest.raises(UserError, match="nothing"):
        convert_file(src, layout, fmt="alpaca")
