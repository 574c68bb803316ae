"""The whole flow in a real browser, nothing typed that the kit already knows (issue 10).

Fresh layout with the demo's tiny base and data -> open the page -> Start as it is -> "Finished." ->
Chat: the run from the Checkpoint dropdown, Load model, one of the demo's questions gets its
reference answer -> Evaluate & Predict writes <run>/eval_<time> (BLEU / ROUGE) -> Export with the
default directory -> the merged model is in the run folder -> the Runs tab shows the run finished
with its merged model and prediction -> Verify shows base vs fine-tuned scores -> a second Start
makes a second run id and leaves the first untouched -> the UI process is killed while that
trainer runs: the trainer stops too (issue 14 item 6).

Debian's Chromium driven by playwright (never `playwright install`); skipped with a reason when
either is missing, except under CI=true.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_support import (  # noqa: E402
    CHROMIUM_FLAGS,
    chromium,
    field,
    playwright,
    save_failure,
    visible,
    wait_textbox,
    wait_value,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _demo_layout(tmp_path):
    """A fresh layout with the demo's data converted and registered, and the demo's tiny base
    (made once in the repository's model cache, like `nox -s smoke` does)."""
    from finetune.demo import RAW_BACKGROUND, RAW_FACTS, Demo
    from finetune.layout import Layout

    for rel in (RAW_FACTS, RAW_BACKGROUND):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    layout = Layout.from_env(root=tmp_path, env={}, models_dir=Layout.from_env(root=ROOT, env={}).models_dir)
    demo = Demo(layout, webui=False, progress=False)
    demo.base_model()
    demo.convert()
    demo.check()
    demo.register()
    return layout, demo.result.model, demo.data_file


def test_whole_flow_in_the_browser(tmp_path, request):
    pytest.importorskip("llamafactory")
    exe = chromium()
    sync_playwright = playwright()
    import psutil

    from finetune.llama_factory import launcher

    layout, model, data_file = _demo_layout(tmp_path)
    first = json.loads(data_file.read_text(encoding="utf-8").splitlines()[0])["messages"]
    question = next(m["content"] for m in first if m["role"] == "user")
    reference = next(m["content"] for m in first if m["role"] == "assistant")

    handle = launcher.start(layout, model=model, template="qwen", port=7962, wait_timeout=240, spinner=False)
    assert not layout.outputs_dir.exists() or not any(layout.outputs_dir.iterdir())  # nothing until Start
    assert not layout.logs_dir.exists()
    run1 = Path(handle.output_dir)
    page = browser = None
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1500, "height": 2200})
            try:
                page.goto(handle.url, timeout=60_000)
                page.get_by_text("Model name").first.wait_for(timeout=90_000)
                # Ready on open: nothing to load, nothing to type.
                wait_value(page, "Model path", str(model))
                wait_value(page, "Chat template", "qwen")
                wait_value(page, "Data dir", str(layout.data_dir))
                wait_value(page, "Output dir", str(run1))
                wait_value(page, "Compute type", "fp32")
                wait_value(page, "Epochs", "200.0")
                assert "demo_facts" in page.locator("body").inner_text()

                page.get_by_role("button", name="Start").click()
                page.get_by_text("Finished.").first.wait_for(timeout=600_000)
                for _ in range(40):
                    if (run1 / "train_results.json").is_file():
                        break
                    time.sleep(0.5)
                assert (run1 / "adapter_model.safetensors").is_file(), sorted(p.name for p in run1.iterdir())
                print(f"run 1: {run1}")

                # Chat with the run picked from the Checkpoint path dropdown.
                page.get_by_role("tab", name="Chat").click()
                ckpt = field(page, "Checkpoint path")
                ckpt.click()
                page.get_by_role("option", name=re.compile(rf"^{re.escape(run1.name)} \(finished")).first.click()
                page.keyboard.press("Escape")
                page.get_by_role("button", name="Load model", exact=True).click()
                wait_textbox(page, "Model loaded", timeout=180_000)
                # near-greedy in the Chat tab (the Evaluate tab's Temperature is hidden); the chat box
                # appears only after the load, so wait for its input before typing
                temp = page.locator('input[aria-label="number input for Temperature"]:visible').first
                temp.wait_for(timeout=30_000)
                temp.fill("0.01")
                temp.press("Tab")
                page.wait_for_function(
                    "() => [...document.querySelectorAll('input[aria-label=\"number input for Temperature\"]')]"
                    ".some(e => e.offsetParent !== null && parseFloat(e.value) <= 0.011)", timeout=10_000)
                page.get_by_placeholder("Input...").first.fill(question)
                page.get_by_role("button", name="Submit").first.click()
                page.get_by_text(reference).first.wait_for(timeout=120_000)
                page.get_by_role("button", name="Unload model", exact=True).click()

                # Evaluate & Predict on the same run, Output dir as LlamaBoard fills it (eval_<time>): the
                # results land inside the run, the trainer's stderr in the run's log folder.
                page.get_by_role("tab", name="Evaluate & Predict").click()
                visible(page.get_by_label(re.compile(r"^Dataset\b"))).click()
                page.get_by_role("option", name="demo_facts").first.click()
                page.keyboard.press("Escape")
                name = visible(page.get_by_role("textbox", name=re.compile(r"^Output dir\b"))).input_value()
                assert name.startswith("eval_"), name
                page.get_by_role("button", name="Start", exact=True).click()
                visible(page.get_by_text(re.compile(r"^(Finished\.|Failed)"))).wait_for(timeout=600_000)
                evaluated = run1 / name
                for _ in range(40):
                    if (evaluated / "all_results.json").is_file():
                        break
                    time.sleep(0.5)
                eval_log = layout.log_dir(run1.name) / f"{name}.eval.log"
                assert (evaluated / "all_results.json").is_file(), eval_log.read_text(encoding="utf-8")[-3000:]
                results = json.loads((evaluated / "all_results.json").read_text(encoding="utf-8"))
                assert "predict_bleu-4" in results and (evaluated / "generated_predictions.jsonl").is_file()
                assert eval_log.is_file() and eval_log.stat().st_size > 0, eval_log
                print(f"evaluate: {evaluated}: " + ", ".join(f"{k} {v}" for k, v in sorted(results.items())
                                                             if k.startswith("predict_")))

                # Export with the default directory: <run>/merged.
                page.get_by_role("tab", name="Export").click()
                wait_value(page, "Export dir", str(run1 / "merged"))
                page.get_by_role("button", name="Export", exact=True).click()
                wait_textbox(page, "Model exported.", timeout=300_000)
                assert (run1 / "merged" / "config.json").is_file()
                assert any((run1 / "merged").glob("*.safetensors"))

                # The Runs tab: the run, finished, with its merged model; Verify scores it.
                page.get_by_role("tab", name="Runs").click()
                row = page.locator("tr", has_text=run1.name).first
                row.wait_for(timeout=30_000)
                row_text = row.inner_text()
                assert "finished" in row_text and "merged" in row_text and "pred\u00d71" in row_text, row_text
                field(page, "Run to verify").click()
                page.get_by_role("option", name=run1.name, exact=True).first.click()
                page.keyboard.press("Escape")
                wait_value(page, "Held-out file", str(data_file))
                page.get_by_role("button", name="Verify", exact=True).click()
                page.get_by_text("exact match").first.wait_for(timeout=300_000)
                result = page.locator("table", has_text="exact match").first.inner_text()
                base_pct, tuned_pct = [int(x) for x in re.findall(r"exact match\s+(\d+)%\s+(\d+)%", result)[0]]
                print(f"verify: exact match base {base_pct}% -> fine-tuned {tuned_pct}%")
                assert tuned_pct >= 80 and base_pct <= 10, result
                field(page, "Runs to plot").click()
                page.get_by_role("option", name=run1.name, exact=True).first.click()
                page.keyboard.press("Escape")
                time.sleep(2)
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "webui-runs-tab.png"), full_page=True)

                # A second Start: a new run id, the first untouched.
                before = _digest(run1)
                page.get_by_role("tab", name="Train").click()
                page.get_by_role("button", name="Start").click()
                deadline = time.monotonic() + 120
                run2 = None
                while run2 is None and time.monotonic() < deadline:
                    others = [p for p in layout.outputs_dir.iterdir() if p.is_dir() and p != run1]
                    run2 = others[0] if others else None
                    time.sleep(0.5)
                assert run2 is not None and run2.name != run1.name
                wait_value(page, "Output dir", str(run2))  # the box follows the new run (it did not always)
                trainers: list = []
                deadline = time.monotonic() + 120
                while not trainers and time.monotonic() < deadline:
                    trainers = [p for p in psutil.Process(handle.pid).children(recursive=True)
                                if "train" in " ".join(p.cmdline())]
                    time.sleep(0.3)
                assert trainers, "the second run's trainer never started"
            except BaseException:
                save_failure(page, request.node.name, handle.log_path)
                raise
            finally:
                browser.close()

        # The UI dies (kill -9) while the second trainer runs: the trainer stops too.
        if sys.platform != "win32":
            os.kill(handle.pid, signal.SIGKILL)
            gone, alive = psutil.wait_procs(trainers, timeout=30)
            assert not alive, [p.pid for p in alive]
        assert _digest(run1) == before  # the first run was never touched
        assert (run1 / "merged" / "config.json").is_file()
    finally:
        handle.stop()
