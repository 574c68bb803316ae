"""Inference, merge and verification on a real tiny LoRA run (LLaMA-Factory's chat engine, CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.smoke
pytest.importorskip("llamafactory")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runs_support as rs  # noqa: E402

from finetune.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["What is the capital of France?", "What is the capital of Japan?", "Hello!"]


@pytest.fixture(scope="module")
def run():
    return rs.trained()


@pytest.fixture(scope="module")
def chat(run):
    from finetune.inference.chat import load
    from finetune.inference.resolve import resolve

    c = load(resolve(rs.shared_layout(), run.run_id))
    yield c
    c.close()


def _env():
    return {**os.environ, "FINETUNE_ROOT": str(rs.shared_layout().root), "DISABLE_VERSION_CHECK": "1"}


def test_prompt_tokens_equal_what_training_saw(run, chat):
    """LLaMA-Factory's own dataset pipeline, fed the run's training_args.yaml, against our prompt ids."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = yaml.safe_load((Path(run.run_dir) / "training_args.yaml").read_text(encoding="utf-8"))
    args.update(output_dir=tempfile.mkdtemp(), overwrite_output_dir=True, max_samples=4)
    args.pop("preprocessing_num_workers", None)
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tok = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tok["tokenizer"], data_args)
    ds = get_dataset(template, model_args, data_args, training_args, stage="sft", **tok)["train_dataset"]
    convs = rs.conversations(4)
    for i in (0, 1):  # without and with a system prompt
        sample = ds[i]
        cut = next(j for j, lab in enumerate(sample["labels"]) if lab != -100)
        msgs = convs[i]["messages"]
        system = msgs[0]["content"] if msgs[0]["role"] == "system" else None
        turns = [m for m in msgs if m["role"] != "system"]
        assert chat.prompt_ids(turns[:-1], system=system) == sample["input_ids"][:cut]
        # and what training learned to produce is what generation is scored against
        assert chat.tokenizer.decode(sample["input_ids"][cut:]).startswith(turns[-1]["content"])


def test_adapter_and_merged_model_answer_the_same(run, chat):
    from finetune.inference.chat import generate_answers
    from finetune.inference.merge import merge
    from finetune.runs import discover

    layout = rs.shared_layout()
    result = merge(layout, run.run_id, n_check=2, force=True)
    merged = Path(result["merged"])
    assert result["check"]["equal"] and merged == Path(run.run_dir) / "merged"
    assert (merged / "config.json").is_file() and json.loads((merged / "finetune_merge.json").read_text())["template"] == "qwen"
    adapter_answers = generate_answers(chat, PROMPTS, max_new_tokens=24)
    merged_answers = generate_answers(str(merged), PROMPTS, layout=layout, max_new_tokens=24)
    assert adapter_answers == merged_answers
    assert all(a for a in adapter_answers)
    info = {r.id: r for r in discover(layout)}[run.run_id]
    assert info.artifacts["merged"] == str(merged)
    with pytest.raises(UserError, match="already exists"):
        merge(layout, run.run_id, n_check=0)


def test_merge_refuses_a_quantized_base(run, tmp_path):
    from finetune.inference.merge import merge

    qbase = tmp_path / "quantized-base"
    shutil.copytree(rs.tiny_model_dir(), qbase)
    cfg = json.loads((qbase / "config.json").read_text(encoding="utf-8"))
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (qbase / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(UserError) as err:
        merge(rs.shared_layout(), run.run_id, base=str(qbase), out_dir=str(tmp_path / "m"))
    assert "quantized" in err.value.message and "--base PATH_TO_FULL_PRECISION_MODEL" in err.value.fix
    assert not (tmp_path / "m").exists()


def test_infer_cli_prompts_file_and_legacy_entry(run, chat, tmp_path):
    from finetune.inference.chat import generate_answers

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:2]), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "invoke", "infer", run.run_id, "--prompts", str(prompts),
                          "--max-new-tokens", "24", "--json"], capture_output=True, text=True, cwd=ROOT,
                         env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    rows = [json.loads(x) for x in Path(summary["out"]).read_text(encoding="utf-8").splitlines()]
    want = generate_answers(chat, PROMPTS[:2], max_new_tokens=24)
    assert [r["answer"] for r in rows] == want and [r["prompt"] for r in rows] == PROMPTS[:2]

    legacy = subprocess.run([sys.executable, "finetune/infer_lora_chat.py", run.run_dir, "--prompt", PROMPTS[0],
                             "--max-new-tokens", "24"], capture_output=True, text=True, cwd=ROOT, env=_env(),
                            timeout=300)
    assert legacy.returncode == 0, legacy.stderr[-2000:]
    assert "legacy" in legacy.stderr and "invoke infer" in legacy.stderr
    assert legacy.stdout.strip() == want[0].strip()


def test_cli_errors_are_clear_without_traceback(run, tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    (empty / "notes.txt").write_text("x", encoding="utf-8")
    cases = [
        (["infer", run.run_id, "--template", "qwen_nope", "--prompt", "hi"], "unknown chat template"),
        (["infer", run.run_id, "--base", str(tmp_path / "gone"), "--prompt", "hi"], "base model not found"),
        (["infer", str(empty), "--prompt", "hi"], "adapter not found"),
        (["merge", str(empty)], "adapter not found"),
        (["verify", run.run_id, "--data", str(tmp_path / "none.jsonl")], "data file not found"),
    ]
    for args, needle in cases:
        out = subprocess.run([sys.executable, "-m", "invoke", *args], capture_output=True, text=True, cwd=ROOT,
                             env=_env(), timeout=120)
        assert out.returncode == 2, (args, out.stderr)
        assert needle in out.stderr and "fix:" in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
    out = subprocess.run([sys.executable, "-m", "invoke", "infer", str(empty), "--prompt", "hi", "--json"],
                         capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)
    assert out.returncode == 2 and json.loads(out.stdout)["error"].startswith("adapter not found")


def test_verify_reports_before_and_after(run):
    from finetune.inference.verify import verify

    layout = rs.shared_layout()
    held_out = layout.root / "held_out.jsonl"
    held_out.write_text("".join(json.dumps(c) + "\n" for c in rs.conversations(10)), encoding="utf-8")
    report = verify(layout, run.run_id, held_out)
    assert report["samples"] == 10 and report["skipped"] == 0
    for side in ("base", "tuned"):
        r = report[side]
        assert r["tokens"] > 0 and r["perplexity"] > 1 and 0 <= r["exact_match"] <= r["normalised_match"] <= 1
    assert report["tuned"]["loss"] < report["base"]["loss"]  # training lowered the loss on its own task
    assert Path(report["saved"]).is_file()
    assert len(report["examples"]) == 5 and report["examples"][0]["reference"].startswith("The capital")


def _generating():
    import threading

    return [t for t in threading.enumerate() if t.name.endswith("(generate)") and t.is_alive()]


def test_stream_ends_generation_however_the_reader_stops(run, chat):
    """LLaMA-Factory generates in a daemon thread; one still in torch at exit aborts Python (exit 134)."""
    full = "".join(chat.stream([{"role": "user", "content": PROMPTS[0]}], max_new_tokens=24))
    assert full and not _generating()
    pieces = chat.stream([{"role": "user", "content": PROMPTS[1]}], max_new_tokens=512, temperature=0.7)
    next(pieces)
    pieces.close()  # what a `break` or Ctrl-C does
    assert not _generating() and "generate" not in vars(chat.torch_model)
    assert "".join(chat.stream([{"role": "user", "content": PROMPTS[0]}], max_new_tokens=24)) == full

    script = ("import sys; from finetune.inference.chat import load; from finetune.inference.resolve import resolve;"
              "from finetune.layout import Layout;"
              f"c = load(resolve(Layout.from_env(), {run.run_id!r}));"
              "s = c.stream([{'role': 'user', 'content': 'hi'}], max_new_tokens=512, temperature=0.7);"
              "print(next(s) is not None); s.close()")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=_env(),
                         timeout=300)
    assert out.returncode == 0 and "terminate called" not in out.stderr, (out.returncode, out.stderr[-2000:])


def test_ctrl_c_in_the_terminal_chat_stops_the_answer_not_the_chat(chat, monkeypatch):
    """Ctrl-C lands while an answer is printed: that answer stops (its thread too), the chat goes on."""
    from rich.console import Console

    from finetune.inference.chat import interactive

    class Terminal:
        def __init__(self):
            self.text, self.answers = [], 0

        def write(self, s):
            if self.text and self.text[-1] == "Assistant: " and not self.answers:
                self.answers += 1
                raise KeyboardInterrupt  # at the first piece of the first answer
            self.text.append(s)

        def flush(self):
            pass

    term = Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    queries = iter([PROMPTS[1], PROMPTS[0], "exit"])
    interactive(chat, gen={"max_new_tokens": 24}, console=Console(file=term, width=80),
                input_fn=lambda _prompt: next(queries))
    out = "".join(term.text)
    assert "answer stopped" in out and not _generating()
    want = "".join(chat.stream([{"role": "user", "content": PROMPTS[0]}], max_new_tokens=24))
    assert out.rstrip().endswith(want.strip()), out[-500:]
