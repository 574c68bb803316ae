"""The seed's acceptance flow in a real browser: data registered -> Web UI (through our launcher,
pre-filled) -> "Load arguments" (still works, never required) -> Start -> "Finished." -> adapter +
trainer_log.jsonl in our layout; and Ctrl-C while a trainer runs leaves no process.

Debian's Chromium driven by playwright (never `playwright install`). Skipped with a reason when
Chromium or playwright is missing, except under CI=true where that is a failure.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "smoke"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_support import ARTIFACTS, CHROMIUM_FLAGS, chromium, field, playwright, wait_value  # noqa: E402
from webui_support import TINY_BOARD_ARGS, write_dataset  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
_chromium, _playwright, _field, _wait_value = chromium, playwright, field, wait_value


def test_browser_trains_to_finished(layout, tiny_model, request):
    pytest.importorskip("llamafactory")
    chromium = _chromium()
    sync_playwright = _playwright()
    from finetune.llama_factory import launcher

    dataset = write_dataset(layout)
    handle = launcher.start(layout, model=tiny_model, template="qwen", port=7960,
                            board_args=TINY_BOARD_ARGS, wait_timeout=240)
    page = None
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            try:
                page.goto(handle.url, timeout=60_000)
                # Labels arrive with a later event than page load: wait for them.
                page.get_by_text("Model name").first.wait_for(timeout=90_000)

                # Pre-filled when the page opens (user config + our layout's defaults).
                _wait_value(page, "Model path", str(tiny_model))
                _wait_value(page, "Chat template", "qwen")
                _wait_value(page, "Data dir", str(layout.data_dir))

                # Our dataset is in the Dataset dropdown without typing anything.
                _field(page, "Dataset").click()
                page.get_by_role("option", name=dataset).first.wait_for(timeout=20_000)
                page.keyboard.press("Escape")

                # The saved argument set: pick it and press Load arguments.
                config = _field(page, "Config path")
                config.click()
                config.fill(handle.arg_set)
                config.press("Enter")
                page.get_by_role("button", name="Load arguments").click()
                page.get_by_text("Arguments have been restored").first.wait_for(timeout=30_000)
                _wait_value(page, "Output dir", handle.output_dir)
                _wait_value(page, "Max samples", TINY_BOARD_ARGS["train.max_samples"])
                assert dataset in page.locator("body").inner_text()

                page.get_by_role("button", name="Start").click()
                page.get_by_text("Finished").first.wait_for(timeout=600_000)
            except BaseException:
                ARTIFACTS.mkdir(exist_ok=True)
                shot = ARTIFACTS / f"{request.node.name}.png"
                page.screenshot(path=str(shot), full_page=True)
                (ARTIFACTS / f"{request.node.name}.webui.log").write_bytes(handle.log_path.read_bytes())
                print(f"screenshot: {shot}")
                raise
            finally:
                browser.close()

        run_dir = layout.run_dir(handle.run_id)
        assert Path(handle.output_dir) == run_dir
        for _ in range(20):  # the trainer's last files land just before "Finished"
            if (run_dir / "adapter_model.safetensors").is_file():
                break
            time.sleep(0.5)
        assert (run_dir / "adapter_config.json").is_file(), sorted(p.name for p in run_dir.iterdir())
        assert (run_dir / "adapter_model.safetensors").is_file()
        log_lines = (run_dir / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()
        assert log_lines and '"loss"' in log_lines[0]
        assert (run_dir / "training_args.yaml").is_file()
        # The trainer's output went to our log too.
        assert "llamafactory" in handle.log_path.read_text(encoding="utf-8", errors="replace").lower()
    finally:
        handle.stop()


def test_ctrl_c_during_training_leaves_no_process(tmp_path, tiny_model):
    """Start the launcher as a user does, press Start in the browser, Ctrl-C the launcher while the
    trainer runs: the UI and the trainer are gone (psutil), the PID file too."""
    import signal
    import subprocess
    import sys

    import psutil

    pytest.importorskip("llamafactory")
    if sys.platform == "win32":
        pytest.skip("SIGINT to a process; Windows uses CTRL_BREAK through the same code path")
    chromium = _chromium()
    sync_playwright = _playwright()
    from finetune.layout import Layout

    layout = Layout.from_env(root=tmp_path, env={})
    write_dataset(layout, n=64)
    env = {**os.environ, "FINETUNE_ROOT": str(tmp_path)}
    out_path = tmp_path / "launcher.out"
    with out_path.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen([sys.executable, "-m", "finetune.llama_factory.launcher", "--port", "7961", "--model", str(tiny_model),
                                 "--template", "qwen"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while "is ready" not in out_path.read_text(encoding="utf-8"):
            assert proc.poll() is None and time.monotonic() < deadline, out_path.read_text(encoding="utf-8")
            time.sleep(0.3)
        text = out_path.read_text(encoding="utf-8")
        url = re.search(r"ready: (\S+)", text).group(1)
        ui_pid = int(re.search(r"PID\s+(\d+)", text).group(1))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.goto(url, timeout=60_000)
            page.get_by_text("Model name").first.wait_for(timeout=90_000)
            _wait_value(page, "Data dir", str(layout.data_dir))  # ready on open: no Load arguments
            page.get_by_role("button", name="Start").click()
            trainers: list[int] = []
            deadline = time.monotonic() + 120
            while not trainers and time.monotonic() < deadline:
                trainers = [p.pid for p in psutil.Process(ui_pid).children(recursive=True)
                            if "train" in " ".join(p.cmdline())]
                time.sleep(0.2)
            browser.close()
        assert trainers, "the trainer never started"
        tree = [ui_pid, *[p.pid for p in psutil.Process(ui_pid).children(recursive=True)]]
        assert set(trainers) <= set(tree), "the trainer ended before Ctrl-C: the test would prove nothing"
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        alive = [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert not alive, alive
        assert not layout.pid_file.exists()
        assert "stopped the Web UI" in out_path.read_text(encoding="utf-8")
    finally:
        if proc.poll() is None:
            proc.kill()
