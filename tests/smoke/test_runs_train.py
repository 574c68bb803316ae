"""Headless training on the tiny model: the Web UI's files, a finished run, a failed one, one stopped
with Ctrl-C mid-training and resumed; discovery sees each state. Real LLaMA-Factory, CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.smoke
pytest.importorskip("llamafactory")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runs_support as rs  # noqa: E402

from finetune.errors import UserError  # noqa: E402
from finetune.runs import discover  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_finished_run_has_the_web_ui_files_and_is_discovered():
    res = rs.trained()
    assert res.status == "finished" and res.returncode == 0 and res.steps == res.total_steps > 0
    run = Path(res.run_dir)
    for name in ("training_args.yaml", "llamaboard_config.yaml", "adapter_config.json", "adapter_model.safetensors",
                 "trainer_log.jsonl", "train_results.json", "running_log.txt", "training_loss.png"):
        assert (run / name).is_file(), name
    log = Path(res.log_path).read_text(encoding="utf-8")
    assert log.strip(), "train.log is empty"
    info = {r.id: r for r in discover(rs.shared_layout())}[res.run_id]
    assert info.status == "finished" and info.template == "qwen" and info.base_model == str(rs.tiny_model_dir())
    assert info.steps == res.steps and info.last_loss is not None and info.artifacts["checkpoints"]


def test_training_args_equal_what_the_web_ui_writes(tmp_path):
    """Feed our llamaboard_config into LLaMA-Factory's own page code and compare its training args."""
    res = rs.trained()
    run = Path(res.run_dir)
    ours = yaml.safe_load((run / "training_args.yaml").read_text(encoding="utf-8"))
    board = yaml.safe_load((run / "llamaboard_config.yaml").read_text(encoding="utf-8"))
    os.chdir(tmp_path)  # the page writes llamaboard_cache/ into the current folder
    try:
        import llamafactory.webui.interface as iface
        from llamafactory.webui.common import _clean_cmd

        captured = {}

        class Capture(iface.Engine):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                captured["engine"] = self

        iface.Engine = Capture
        try:
            demo = iface.create_ui()
        finally:
            iface.Engine = Capture.__mro__[1]
        manager = captured["engine"].manager
        start = next(fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "run_train")
        data = {}
        for comp in start.inputs:
            elem_id = manager.get_id_by_elem(comp)
            data[comp] = board.get(elem_id, comp.value)
        data[manager.get_elem_by_id("top.model_path")] = ours["model_name_or_path"]
        data[manager.get_elem_by_id("train.output_dir")] = str(run)
        theirs = _clean_cmd(captured["engine"].runner._parse_train_args(data))
    finally:
        os.chdir(ROOT)
    # the two values we set on purpose (see finetune/llama_factory/args.py)
    assert theirs.pop("preprocessing_num_workers") == 16
    ours.pop("preprocessing_num_workers")
    assert ours == theirs
    # and every page field we wrote is one the page has
    assert set(board) <= {manager.get_id_by_elem(c) for c in start.inputs}


def test_failed_run_gives_a_clear_error_and_shows_as_failed():
    layout = rs.shared_layout()
    bad = layout.data_dir / "broken.jsonl"
    rs.write_dataset(layout.data_dir, "broken", n=4)
    bad.write_text('{"messages": [}\nnot json\n', encoding="utf-8")  # LLaMA-Factory cannot load this
    out = subprocess.run(
        [sys.executable, "run_finetune.py", "--model", str(rs.tiny_model_dir()), "--template", "qwen",
         "--dataset", "broken", "--run-name", "broken", "--cutoff", "64"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "FINETUNE_ROOT": str(layout.root), "DISABLE_VERSION_CHECK": "1"})
    assert out.returncode == 2, out.stdout + out.stderr
    assert "legacy" in out.stderr and "invoke train" in out.stderr
    assert "training of" in out.stderr and "failed (exit code" in out.stderr and "last lines of the log" in out.stderr
    assert "Traceback" not in out.stderr.split("last lines of the log")[0]
    failed = [r for r in discover(layout) if r.id.endswith("-broken")]
    assert len(failed) == 1 and failed[0].status == "failed"


def _wait_for(cond, timeout=120.0, what=""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(os.name == "nt", reason="Windows has no SIGINT for a child (send_signal raises ValueError)")
def test_ctrl_c_stops_the_trainer_then_resume_finishes(tmp_path):
    """SIGINT to `train()` (what Ctrl-C sends) stops the whole child tree; --resume continues."""
    import psutil

    from finetune.llama_factory.train import train

    layout = rs.shared_layout()
    run_id = "20250101-000000-resume"
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import runs_support as rs\n"
        "from finetune.cli import guarded\n"
        "from finetune.llama_factory.train import train\n"
        f"rs._ROOT = __import__('pathlib').Path({str(layout.root)!r})\n"
        f"rs._MEMO['model'] = __import__('pathlib').Path({str(rs.tiny_model_dir())!r})\n"
        "guarded(lambda: train(rs.shared_layout(), rs.spec(per_device_train_batch_size=1, num_train_epochs=2,"
        f" save_steps=10, logging_steps=1), run_id={run_id!r}, progress=False))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "DISABLE_VERSION_CHECK": "1"})
    run_dir = layout.run_dir(run_id)
    try:
        _wait_for(lambda: (run_dir / "checkpoint-10" / "trainer_state.json").is_file(), what="checkpoint-10 saved")
        trainers = psutil.Process(proc.pid).children(recursive=True)
        assert trainers, "no trainer child"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopped by Ctrl-C" in err and f"invoke train --resume {run_id}" in err and "Traceback" not in err
    psutil.wait_procs(trainers, timeout=10)
    assert not [p for p in trainers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "trainer left behind"
    info = {r.id: r for r in discover(layout)}[run_id]
    assert info.status == "interrupted" and info.steps < info.total_steps
    stopped_at = info.steps

    res = train(layout, None, run_id=run_id, resume=True, progress=False)
    assert res.status == "finished" and res.resumed_from and res.resumed_from.startswith("checkpoint-")
    resumed_step = int(res.resumed_from.split("-")[1])
    assert 10 <= resumed_step <= stopped_at
    logs = [json.loads(x) for x in (run_dir / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [x["current_steps"] for x in logs]
    assert steps[-1] == logs[-1]["total_steps"] == res.total_steps
    # the second session started after the checkpoint, not from step 1 again
    assert steps.count(1) == 1 and resumed_step + 1 in steps
    second = (run_dir / "finetune_run.json").read_text(encoding="utf-8")
    assert json.loads(second)["resumed_from"] == res.resumed_from
    assert {r.id: r for r in discover(layout)}[run_id].status == "finished"
    with pytest.raises(UserError, match="already finished"):
        train(layout, None, run_id=run_id, resume=True, progress=False)
