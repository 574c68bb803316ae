"""data.check agrees with LLaMA-Factory itself: its real loader, sharegpt converter and SFT
preprocessor (llamafactory.data.get_dataset) run on corpora with planted faults; the lines the
checker marks `error` are exactly the conversations LLaMA-Factory drops, and the files it marks
fatal are exactly the ones LLaMA-Factory fails on."""

from __future__ import annotations

import json
import random

import pytest

pytestmark = pytest.mark.smoke

pytest.importorskip("llamafactory")

from finetune.data.check import check_file  # noqa: E402
from finetune.data.convert import convert_file  # noqa: E402
from finetune.data.lf_oracle import lf_outcome, marker, planted_conversation, write_planted_corpus  # noqa: E402


def conv(n, *turns):
    return {"messages": [{"role": r, "content": c if r == "function_call" or not isinstance(c, str)
                          else f"{c} {marker(n)}"} for r, c in turns]}


def test_drops_agree_exactly(tmp_path, tiny_model):
    path = tmp_path / "planted.jsonl"
    bad = write_planted_corpus(path, n=300, n_bad=60, seed=7)
    # tricky cases LF keeps, appended with their own markers
    rng = random.Random(1)
    extra = [
        conv(300, ("user", "u"), ("function_call", '{"name": "f", "arguments": {}}'), ("observation", "o"),
             ("assistant", "a")),
        conv(301, ("system", None), ("user", "u"), ("assistant", "a")),
        conv(302, ("user", ""), ("assistant", "a")),
        planted_conversation(rng, 303, None),
    ]
    with path.open("a", encoding="utf-8") as fh:
        for rec in extra:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    report = check_file(path)
    lf = lf_outcome(path, tiny_model)
    assert lf.ok, lf.error
    dropped_by_lf = set(range(304)) - lf.kept
    assert dropped_by_lf == bad  # sanity: the oracle sees the planted drops
    assert report.error_lines == {m + 1 for m in dropped_by_lf}  # marker n sits on line n + 1
    assert not report.fatal and report.valid == lf.rows


FATAL = {
    "type_clash": conv(1, ("user", 5), ("assistant", "a")),
    "array_line": b"[1, 2]\n",
    "invalid_json": b'{"messages": [\n',
    "messages_missing": {"id": 1},
    "content_null": conv(1, ("user", None), ("assistant", "a")),
    "bad_function_call": conv(1, ("user", "u"), ("function_call", "nope"), ("observation", "o"), ("assistant", "a")),
    "invalid_utf8": b'{"messages": [{"role": "user", "content": "\xff ID000001"}, '
                    b'{"role": "assistant", "content": "a ID000001"}]}\n',
}
BENIGN = {  # warnings only: LF loads every line
    "bom_crlf_blank": None,
    "int_and_float": None,
}


@pytest.mark.parametrize("case", sorted(FATAL))
def test_fatal_files_fail_in_lf_and_in_check(tmp_path, tiny_model, case):
    path = tmp_path / f"{case}.jsonl"
    with path.open("wb") as fh:
        for rec in (conv(0, ("user", "u"), ("assistant", "a")), FATAL[case], conv(2, ("user", "u"), ("assistant", "a"))):
            fh.write(rec if isinstance(rec, bytes) else (json.dumps(rec) + "\n").encode())
    report = check_file(path)
    lf = lf_outcome(path, tiny_model)
    assert not lf.ok, f"LLaMA-Factory loaded {case}: kept {lf.kept}"
    assert report.fatal and report.error_lines == {2}


def test_warnings_only_files_load_fully(tmp_path, tiny_model):
    path = tmp_path / "benign.jsonl"
    lines = [b"\xef\xbb\xbf" + json.dumps(conv(0, ("user", "u"), ("assistant", "a"))).encode() + b"\r\n", b"\n",
             json.dumps({**conv(1, ("user", "u"), ("assistant", "a")), "n": 1}).encode() + b"\n",
             json.dumps({**conv(2, ("user", " "), ("assistant", "a")), "n": 1.5}).encode() + b"\n"]
    path.write_bytes(b"".join(lines))
    report = check_file(path)
    lf = lf_outcome(path, tiny_model)
    assert lf.ok and lf.kept == {0, 1, 2}
    assert report.errors == 0 and report.warnings >= 3


def test_converted_lf_demo_toolcall_agrees(tmp_path, tiny_model, lf_demo_dir, layout):
    res = convert_file(lf_demo_dir / "glaive_toolcall_en_demo.json", layout)
    # add markers so survivors can be identified
    rows = [json.loads(line) for line in res.out_path.read_text(encoding="utf-8").splitlines()][:60]
    for i, row in enumerate(rows):
        for m in row["messages"]:
            if m["role"] != "function_call":
                m["content"] += f" {marker(i)}"
    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = check_file(path)
    lf = lf_outcome(path, tiny_model, has_tools=report.has_tools)
    assert lf.ok, lf.error
    assert report.errors == 0 and lf.kept == set(range(len(rows)))
