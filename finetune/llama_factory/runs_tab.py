"""Our runs inside LlamaBoard: what its Chat / Evaluate / Export tabs list, and the Runs tab.

The light half (no gradio, torch or LLaMA-Factory at import; unit-tested):

* :func:`checkpoint_choices`: the runs in our layout whose recorded base model is the selected
  Model path, newest first by run id, each as ``(label, absolute path)`` (a path with the OS
  separator, which LlamaBoard's ``get_save_dir`` uses as given), plus their complete
  ``checkpoint-N`` folders;
* :func:`plan_output_dir`: where a press of Start trains (a fresh run id unless the user picked an
  interrupted run to continue; a finished run is never trained into again);
* :func:`run_of` / :func:`inside_run`: the run folder behind a chosen checkpoint, and a bare name
  (Export dir, Evaluate's output dir) resolved inside it;
* :func:`runs_table` / :func:`loss_points`: the Runs tab's table and loss curves.

:func:`build_runs_tab` (gradio, called inside the page being built) adds the Runs tab: the table
(refreshing every few seconds while the tab is open), loss curves of the selected runs on one plot,
and Verify (``invoke verify``'s before / after check on a chosen held-out file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.layout import Layout
from finetune.runs import artifacts_summary, short_model

MERGED = "merged"
CHECKPOINT_PREFIX = "checkpoint-"
REFRESH_S = 5.0
TABLE_COLUMNS = ["run", "status", "base", "template", "steps", "loss", "artifacts", "note"]
MAX_LOSS_POINTS = 5000


# ---- run folders (adapter over finetune.rundir / finetune.runs) ---------------------------------------
def _run_info(path: Path):
    """RunInfo of one folder (``RunDir.info()`` where it exists, else ``runs.read_run``)."""
    try:
        from finetune.rundir import RunDir
    except ImportError:
        RunDir = None  # noqa: N806
    if RunDir is not None:
        return RunDir(path, run_id=path.name, source="outputs").info()
    from finetune.runs import read_run

    return read_run(path, path.name, "outputs")


def our_runs(layout: Layout) -> list:
    """RunInfo of every run in ``layout.outputs_dir``, newest first by run id."""
    from finetune.runs import discover

    try:
        runs = discover(layout)
    except Exception:  # noqa: BLE001 - a listing must never break the page
        return []
    out = [r for r in runs if getattr(r, "source", "outputs") == "outputs"]
    return sorted(out, key=lambda r: str(r.id), reverse=True)


def _same_path(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return os.path.normpath(a) == os.path.normpath(b)


def complete_checkpoints(run_path: Path) -> list[Path]:
    """``checkpoint-N`` folders whose ``trainer_state.json`` was written (complete), oldest first."""
    found = []
    try:
        children = list(run_path.iterdir())
    except OSError:
        return []
    for child in children:
        if child.is_dir() and child.name.startswith(CHECKPOINT_PREFIX) and (child / "trainer_state.json").is_file():
            try:
                found.append((int(child.name[len(CHECKPOINT_PREFIX):]), child))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def _has_weights(folder: Path, peft: bool) -> bool:
    if peft:
        return (folder / "adapter_config.json").is_file() and any(
            (folder / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin"))
    return (folder / "config.json").is_file() and any(
        (folder / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                         "pytorch_model.bin.index.json"))


def checkpoint_choices(layout: Layout, model_path: str | None, finetuning_type: str = "lora") -> list[tuple[str, str]]:
    """Runs trained from ``model_path`` (their weights, then complete checkpoints), newest first."""
    if not model_path:
        return []
    peft = finetuning_type in ("lora", "oft")
    out: list[tuple[str, str]] = []
    for run in our_runs(layout):
        if not _same_path(run.base_model, model_path):
            continue
        folder = Path(run.path)
        loss = f", loss {run.last_loss:.3g}" if isinstance(run.last_loss, (int, float)) else ""
        if _has_weights(folder, peft):
            out.append((f"{run.id} ({run.status}{loss})", str(folder)))
        for ckpt in reversed(complete_checkpoints(folder)):
            if _has_weights(ckpt, peft):
                out.append((f"{run.id}/{ckpt.name} ({run.status})", str(ckpt)))
    return out


# ---- where Start trains ---------------------------------------------------------------------------
@dataclass
class StartPlan:
    output_dir: str
    run_id: str
    note: str
    resume: bool = False


def resolve_output_dir(layout: Layout, value: str | None) -> Path | None:
    """The folder an Output dir value names: a path as given, a bare name inside our outputs."""
    if not value:
        return None
    if os.sep in value or (os.altsep and os.altsep in value):
        return Path(value)
    return layout.outputs_dir / value


def plan_output_dir(layout: Layout, value: str | None) -> StartPlan:
    """Where a press of Start trains.

    * a folder that does not exist yet (the fresh run id the page opened with) or holds no run: there;
    * an *interrupted* run with a complete checkpoint (picked from the Output dir list, where it is
      labelled "continue"): continued there, said plainly;
    * anything else (a finished, failed or running run): a new run id; the old one is not touched.
    """
    folder = resolve_output_dir(layout, value)
    if folder is not None and (not folder.exists() or not _holds_run(folder)):
        return StartPlan(str(folder), folder.name, "")
    if folder is not None:
        info = _run_info(folder)
        ckpts = complete_checkpoints(folder)
        if info.status == "interrupted" and ckpts:
            return StartPlan(str(folder), folder.name,
                             f"continuing the interrupted run {folder.name} from {ckpts[-1].name}", resume=True)
        why = f"{folder.name} is {info.status}; it is left as it is"
    else:
        why = "no Output dir was given"
    from finetune.llama_factory.board import run_output_dir

    run_id = layout.new_run()
    return StartPlan(run_output_dir(layout.outputs_dir, run_id), run_id, f"a new run ({why})")


def _holds_run(folder: Path) -> bool:
    markers = ("training_args.yaml", "trainer_log.jsonl", "adapter_config.json", "train_results.json",
               "trainer_state.json", "running_log.txt")
    return any((folder / m).exists() for m in markers) or bool(complete_checkpoints(folder))


def output_dir_choices(layout: Layout, model_path: str | None, fresh: str) -> list[tuple[str, str]]:
    """The Output dir list: a new run (shown as its path), then interrupted runs of this model that
    can be continued (shown as "continue RUN from checkpoint-N")."""
    out = [(fresh, fresh)]
    for run in our_runs(layout):
        if run.status != "interrupted" or (model_path and not _same_path(run.base_model, model_path)):
            continue
        ckpts = complete_checkpoints(Path(run.path))
        if ckpts:
            out.append((f"continue {run.id} from {ckpts[-1].name}", str(run.path)))
    return out


# ---- the run behind a checkpoint choice ------------------------------------------------------------
def run_of(layout: Layout, checkpoint: str | Sequence[str] | None) -> Path | None:
    """The run folder in our layout behind a Checkpoint path value (first of a list), or None."""
    if isinstance(checkpoint, (list, tuple)):
        checkpoint = checkpoint[0] if checkpoint else None
    if not checkpoint or not (os.sep in checkpoint or (os.altsep and os.altsep in checkpoint)):
        return None
    path = Path(checkpoint)
    try:
        rel = path.resolve().relative_to(layout.outputs_dir.resolve())
    except (ValueError, OSError):
        return None
    if not rel.parts:
        return None
    return layout.outputs_dir / rel.parts[0]


def default_export_dir(layout: Layout, checkpoint: str | Sequence[str] | None) -> str | None:
    """``<run>/merged`` (``<run>/merged-checkpoint-N`` for a checkpoint) for a run of ours."""
    run = run_of(layout, checkpoint)
    if run is None:
        return None
    first = checkpoint[0] if isinstance(checkpoint, (list, tuple)) else checkpoint
    name = Path(str(first)).name
    return str(run / (f"{MERGED}-{name}" if name.startswith(CHECKPOINT_PREFIX) else MERGED))


def inside_run(layout: Layout, checkpoint: str | Sequence[str] | None, value: str | None) -> str | None:
    """A bare name (no separator) resolved inside the chosen run's folder; None to leave it."""
    if not value or os.sep in value or (os.altsep and os.altsep in value):
        return None
    run = run_of(layout, checkpoint)
    return str(run / value.strip()) if run is not None else None


# ---- the Runs tab's data ---------------------------------------------------------------------------
def runs_table(layout: Layout) -> list[list[Any]]:
    """One row per run in our layout (newest first): the columns of :data:`TABLE_COLUMNS`."""
    rows = []
    for run in our_runs(layout):
        steps = "-" if run.steps is None else (f"{run.steps}/{run.total_steps}" if getattr(run, "total_steps", None)
                                               else str(run.steps))
        loss = f"{run.last_loss:.4g}" if isinstance(run.last_loss, (int, float)) else "-"
        rows.append([run.id, run.status, short_model(run.base_model), run.template or "-", steps, loss,
                     artifacts_summary(run.artifacts or {}), run_note(run)])
    return rows


def run_note(run) -> str:
    """Why a failed run failed (its log's last error line) and what to change in the Train tab;
    otherwise what could not be read in its folder."""
    if run.status == "failed":
        from finetune.rundir import RunDir, failure_kind

        error = RunDir(Path(run.path), str(run.id)).error_in_logs() or ""
        kind = failure_kind(error)
        if kind == "oom":
            return f"out of memory: lower Batch size and/or Cutoff length, then Start ({error[:100]})"
        if kind == "data":
            return f"the data did not load: invoke data.check on the dataset's file ({error[:100]})"
        if error:
            return error[:160]
    return "; ".join(getattr(run, "problems", None) or [])[:160]


def loss_points(layout: Layout, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """``{"step", "loss", "run"}`` points of the selected runs' trainer logs (tail-bounded)."""
    from finetune.fileio import tail_lines

    points: list[dict[str, Any]] = []
    paths = {str(r.id): Path(r.path) for r in our_runs(layout)}
    for run_id in run_ids:
        if str(run_id) not in paths:
            continue
        path = paths[str(run_id)] / "trainer_log.jsonl"
        try:
            lines = tail_lines(path, MAX_LOSS_POINTS)
        except OSError:
            continue
        before = len(points)
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and isinstance(item.get("loss"), (int, float)) and item.get("current_steps"):
                points.append({"step": int(item["current_steps"]), "loss": float(item["loss"]), "run": str(run_id)})
        if len(points) == before:  # fewer steps than logging_steps: the run's mean loss at its last step
            from finetune.rundir import RunDir

            steps, _total, losses = RunDir(paths[str(run_id)], str(run_id)).progress()
            if steps and losses:
                points.append({"step": int(steps), "loss": float(losses[-1]), "run": str(run_id)})
    return points


def held_out_files(layout: Layout) -> list[str]:
    """ChatML files in the data folder (what Verify can score on)."""
    try:
        return sorted(str(p) for p in layout.data_dir.glob("*.jsonl"))
    except OSError:
        return []


def dataset_file(layout: Layout, run_id: str) -> str | None:
    """The data file of the run's first training dataset, when it is registered here."""
    info = next((r for r in our_runs(layout) if r.id == run_id), None)
    from finetune.data.register import registered_file

    names = [n.strip() for n in str(getattr(info, "dataset", "") or "").split(",") if n.strip()]
    for name in names:
        path = registered_file(layout.data_dir, name)
        if path is not None and path.is_file():
            return str(path)
    return None


def verify_markdown(report: dict[str, Any]) -> str:
    """Base vs fine-tuned scores (and a few answers) as Markdown."""
    b, t = report["base"], report["tuned"]

    def pct(x):
        return f"{x:.0%}" if isinstance(x, (int, float)) else "-"

    def num(x):
        return f"{x:.4f}" if isinstance(x, (int, float)) else "-"

    lines = [f"**Verify {report.get('run')}** on `{Path(report['data']).name}` ({report['samples']} conversations)",
             "", "| | base | fine-tuned |", "|---|---|---|",
             f"| exact match | {pct(b.get('exact_match'))} | {pct(t.get('exact_match'))} |",
             f"| normalised match | {pct(b.get('normalised_match'))} | {pct(t.get('normalised_match'))} |",
             f"| assistant loss | {num(b.get('loss'))} | {num(t.get('loss'))} |"]
    if "perplexity" in b:
        lines.append(f"| perplexity | {num(b.get('perplexity'))} | {num(t.get('perplexity'))} |")
    examples = report.get("examples") or []
    if examples:
        lines += ["", "| question | reference | base | fine-tuned |", "|---|---|---|---|"]
        for ex in examples[:5]:
            cells = [str(ex.get(k, "")).replace("|", "\\|").replace("\n", " ")[:80]
                     for k in ("prompt", "reference", "base", "tuned")]
            lines.append("| " + " | ".join(cells) + " |")
    if report.get("saved"):
        lines += ["", f"saved: `{report['saved']}`"]
    return "\n".join(lines)


# ---- the tab (gradio) ------------------------------------------------------------------------------
def build_runs_tab(layout: Layout) -> dict[str, Any]:
    """The Runs tab's components and events; call inside ``with gr.Tab(...)`` of the page."""
    import gradio as gr

    def table_update():
        rows = runs_table(layout)
        ids = [r[0] for r in rows]
        return gr.update(value=rows), gr.update(choices=ids), gr.update(choices=ids)

    def plot_update(selected):
        import pandas as pd

        points = loss_points(layout, selected or [])
        frame = pd.DataFrame(points or [], columns=["step", "loss", "run"])
        return gr.update(value=frame)

    def pick_file(run_id):
        return gr.update(choices=held_out_files(layout), value=dataset_file(layout, run_id) if run_id else None)

    def do_verify(run_id, data_file, max_samples):
        if not run_id:
            gr.Warning("choose a run to verify")
            return "choose a run first"
        if not data_file:
            gr.Warning("choose a held-out file")
            return "choose a held-out file (a ChatML .jsonl in the data folder)"
        from finetune.errors import UserError
        from finetune.inference.verify import verify

        try:
            report = verify(layout, run_id, data_file, max_samples=int(max_samples or 50), max_new_tokens=48)
        except UserError as err:
            return f"**verify failed**: {err.message}\n\nfix: `{err.fix}`" if err.fix else f"**verify failed**: {err.message}"
        return verify_markdown(report)

    with gr.Row():
        refresh = gr.Button("Refresh", scale=0)
        gr.Markdown(f"Runs in `{layout.outputs_dir}` (the table that `invoke runs` prints; refreshes every "
                    f"{REFRESH_S:.0f} s while this tab is open).")
    table = gr.Dataframe(headers=TABLE_COLUMNS, value=[], interactive=False, wrap=True)
    with gr.Row():
        selected = gr.Dropdown(label="Runs to plot", multiselect=True, choices=[], scale=3)
        plot = gr.LinePlot(x="step", y="loss", color="run", title="training loss", scale=5)
    with gr.Row():
        verify_run = gr.Dropdown(label="Run to verify", choices=[], scale=2)
        verify_file = gr.Dropdown(label="Held-out file", choices=[], allow_custom_value=True, scale=3)
        verify_samples = gr.Number(label="Max samples", value=50, precision=0, scale=1)
        verify_btn = gr.Button("Verify", variant="primary", scale=1)
    verify_out = gr.Markdown()
    timer = gr.Timer(REFRESH_S, active=False)

    outputs = [table, selected, verify_run]
    refresh.click(table_update, outputs=outputs, queue=False)
    timer.tick(table_update, outputs=outputs, queue=False, show_progress="hidden")
    selected.change(plot_update, [selected], [plot], queue=False)
    verify_run.change(pick_file, [verify_run], [verify_file], queue=False)
    verify_btn.click(do_verify, [verify_run, verify_file, verify_samples], [verify_out])
    return dict(refresh=refresh, table=table, selected=selected, plot=plot, verify_run=verify_run,
                verify_file=verify_file, verify_samples=verify_samples, verify_btn=verify_btn,
                verify_out=verify_out, timer=timer, table_update=table_update, outputs=outputs)
